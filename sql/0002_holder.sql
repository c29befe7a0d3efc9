-- 0002_holder: which session may currently write to a client (the delivery handoff).
--
-- session_epoch is bumped by every new session (the latest claim). holder_epoch is the session that
-- holds the right to deliver: a new session takes it only once the previous holder released it
-- (after recording how far it got), or when the previous holder's node is dead, or after the
-- handoff timeout. So two sessions never deliver the same message because they overlapped.

ALTER TABLE clients
    ADD COLUMN holder_epoch BIGINT UNSIGNED NULL AFTER session_epoch,
    ADD COLUMN holder_node  VARCHAR(64)     NULL AFTER holder_epoch;
