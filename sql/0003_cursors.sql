-- 0003_cursors: delivery state moves to its own table.
--
-- Enqueues write clients.last_seq; sessions write the delivery cursor. On one row they blocked each
-- other (an enqueue transaction holds the client row until it commits); on two tables they do not.
-- clients keeps the queue's head (last_seq) and the session epoch; cursors keeps how far delivery
-- got (delivered_seq) and which session may deliver (holder_epoch, holder_node).

CREATE TABLE IF NOT EXISTS cursors (
    client_id     BINARY(16)      NOT NULL,
    delivered_seq BIGINT UNSIGNED NOT NULL DEFAULT 0,
    holder_epoch  BIGINT UNSIGNED NULL,
    holder_node   VARCHAR(64)     NULL,
    PRIMARY KEY (client_id)
) ENGINE = InnoDB;

INSERT IGNORE INTO cursors (client_id, delivered_seq, holder_epoch, holder_node)
    SELECT id, delivered_seq, holder_epoch, holder_node FROM clients;

ALTER TABLE clients
    DROP COLUMN delivered_seq,
    DROP COLUMN holder_epoch,
    DROP COLUMN holder_node;
