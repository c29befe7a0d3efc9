-- 0001_init: clients and their per-client message queues.
--
-- A client's queue is the messages rows with its client_id, ordered by seq
-- (a per-client sequence number handed out by clients.last_seq under the
-- client row lock, so seq order is commit order). Delivery progress is one
-- cumulative cursor, clients.delivered_seq: every message with
-- seq <= delivered_seq was written to the client's socket. Pending messages
-- of one client are the primary-key range (client_id, seq > delivered_seq).
-- A client id is a random UUID (v4) stored as 16 bytes.

CREATE TABLE IF NOT EXISTS clients (
    id            BINARY(16)      NOT NULL,
    last_seq      BIGINT UNSIGNED NOT NULL DEFAULT 0,
    delivered_seq BIGINT UNSIGNED NOT NULL DEFAULT 0,
    session_epoch BIGINT UNSIGNED NOT NULL DEFAULT 0,
    owner_node    VARCHAR(64)     NULL,
    created_at    TIMESTAMP(6)    NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    last_seen_at  TIMESTAMP(6)    NULL,
    PRIMARY KEY (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE IF NOT EXISTS messages (
    client_id   BINARY(16)      NOT NULL,
    seq         BIGINT UNSIGNED NOT NULL,
    id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    body        BLOB            NOT NULL,
    enqueued_at TIMESTAMP(6)    NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (client_id, seq),
    UNIQUE KEY messages_id (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
