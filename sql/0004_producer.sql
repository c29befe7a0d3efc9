-- 0004_producer: what producers ask of a message after it is stored.
--
-- messages.expires_at: --ttl; a message whose time has run out is never delivered.
-- messages.collapse_key: --collapse-key; a newer message with the same key replaces a pending one.
-- messages.dropped: 0 live, 1 expired (a node skipped it), 2 replaced (by replaced_by), 3 purged
-- (chat-admin purge --pending); a dropped
-- message stays in its queue until retention removes it, so the node can tell the client how many
-- it missed (DROPPED <n>) and the producer can read why (chat-enqueue status).
-- dedupe: --dedupe-key; one row per (client, key): the first message's id and seq, for the dedupe
-- window.
-- deliveries: one row per recorded cursor move (plain: written; acknowledged mode: acknowledged),
-- written in the same group commit as the cursor, so a message's delivery time is the time of the
-- first move that covers its seq (one write per client batch, none per message).

ALTER TABLE messages
    ADD COLUMN expires_at   TIMESTAMP(6)     NULL,
    ADD COLUMN collapse_key VARBINARY(255)   NULL,
    ADD COLUMN dropped      TINYINT UNSIGNED NOT NULL DEFAULT 0,
    ADD COLUMN dropped_at   TIMESTAMP(6)     NULL,
    ADD COLUMN replaced_by  BIGINT UNSIGNED  NULL,
    ADD KEY messages_collapse (client_id, collapse_key);

CREATE TABLE IF NOT EXISTS dedupe (
    client_id  BINARY(16)      NOT NULL,
    dedupe_key VARBINARY(255)  NOT NULL,
    message_id BIGINT UNSIGNED NOT NULL,
    seq        BIGINT UNSIGNED NOT NULL,
    created_at TIMESTAMP(6)    NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (client_id, dedupe_key)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS deliveries (
    client_id BINARY(16)       NOT NULL,
    upto_seq  BIGINT UNSIGNED  NOT NULL,
    acked     TINYINT UNSIGNED NOT NULL,
    at        TIMESTAMP(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (client_id, upto_seq)
) ENGINE = InnoDB;
