-- 0009_collapse_keys: collapse keys kept beside the queue, not in an index of every message.
--
-- collapse_keys: per (client, key), the seq of the newest message enqueued with that key. A new
-- message with the key replaces that one if it is still pending (an older one with the key was
-- replaced when that one came, or was delivered or dropped), so one primary-key lookup does what
-- the index messages_collapse (client_id, collapse_key) did, and messages without a key (nearly
-- all) no longer pay an index entry each. A row whose seq is delivered is deleted by retention.

CREATE TABLE IF NOT EXISTS collapse_keys (
    client_id    BINARY(16)      NOT NULL,
    collapse_key VARBINARY(255)  NOT NULL,
    seq          BIGINT UNSIGNED NOT NULL,
    PRIMARY KEY (client_id, collapse_key)
) ENGINE = InnoDB;

INSERT INTO collapse_keys (client_id, collapse_key, seq)
    SELECT client_id, collapse_key, MAX(seq) FROM messages
    WHERE collapse_key IS NOT NULL GROUP BY client_id, collapse_key
    ON DUPLICATE KEY UPDATE seq = GREATEST(collapse_keys.seq, VALUES(seq));

ALTER TABLE messages DROP INDEX IF EXISTS messages_collapse;
