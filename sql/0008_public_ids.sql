-- 0008_public_ids: how a client without a name is shown to others.
--
-- A client id is the client's credential (whoever sends it at GET_CLIENT_ID is that client), so it
-- is never shown to anyone else. A client without a name is shown by its public id instead: the
-- first 8 bytes of SHA-1('chat-public:' || hex(id)), written ~<16 hex digits>. It cannot be turned
-- back into the id; others can use it to SEND to the client or add it as a contact.

ALTER TABLE clients
    ADD COLUMN public_id BINARY(8) AS (UNHEX(LEFT(SHA1(CONCAT('chat-public:', HEX(id))), 16))) PERSISTENT,
    ADD KEY clients_public (public_id);
