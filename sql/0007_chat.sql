-- 0007_chat: accounts, rooms (group rooms and two-person private rooms), contacts, read cursors.
--
-- Every table is keyed so that it shards unchanged: by the name for the name indexes, by the room
-- for a room's log and its member list, by the client for what one client reads and writes.
--
-- accounts: a name a client took (REGISTER), keyed by the name in lower case (names are unique
-- case-insensitively); the password as an argon2id hash (PHC string, salted), never in clear.
-- clients.name: the same name, by client, for showing senders. clients.rooms_version: bumped on
-- every membership change of the client (its sessions reload their rooms when it moves).
--
-- rooms: one row per room. kind 0 public, 1 invite-only, 2 private (the one room of two clients;
-- its id is a UUID v5 of the two client ids, so it needs no lookup). last_seq is the head of the
-- room's log; members the member count (the --max-room-members check). rooms_kind: LIST.
-- room_names: a public or invite-only room's name (lower case) -> its id.
-- The room's log is in messages, like a client's queue, with client_id = the room's id (one id
-- space for every message, so ACK and status take any id); messages.sender_id is who posted
-- (NULL: a producer's chat-enqueue --room).
--
-- room_members (room, client): who may post to and read a room (checked in the post transaction).
-- members (client, room): a client's rooms, and its cursors in each: delivered_seq (delivery, as
-- cursors.delivered_seq for its own queue), read_seq (READ: what the person has read; unread counts
-- follow it), joined_seq (the head when it joined: live delivery starts after it). peer_id: for a
-- private room, the other client.
-- invites (room, client): an invitation to an invite-only room, consumed by JOIN.
-- contacts (client, contact): a client's contact list.

ALTER TABLE clients
    ADD COLUMN name           VARCHAR(32)     NULL,
    ADD COLUMN rooms          INT UNSIGNED    NOT NULL DEFAULT 0,
    ADD COLUMN directs        INT UNSIGNED    NOT NULL DEFAULT 0,
    ADD COLUMN rooms_version  BIGINT UNSIGNED NOT NULL DEFAULT 0;

ALTER TABLE messages
    ADD COLUMN sender_id BINARY(16) NULL;

CREATE TABLE IF NOT EXISTS accounts (
    name_key   VARCHAR(32)  NOT NULL,
    name       VARCHAR(32)  NOT NULL,
    client_id  BINARY(16)   NOT NULL,
    password   VARCHAR(255) NOT NULL,
    created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (name_key)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE IF NOT EXISTS rooms (
    id         BINARY(16)       NOT NULL,
    name       VARCHAR(32)      NOT NULL,
    kind       TINYINT UNSIGNED NOT NULL,
    last_seq   BIGINT UNSIGNED  NOT NULL DEFAULT 0,
    members    INT UNSIGNED     NOT NULL DEFAULT 0,
    created_by BINARY(16)       NULL,
    created_at TIMESTAMP(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (id),
    KEY rooms_kind (kind, name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE IF NOT EXISTS room_names (
    name_key VARCHAR(32) NOT NULL,
    room_id  BINARY(16)  NOT NULL,
    PRIMARY KEY (name_key)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE IF NOT EXISTS room_members (
    room_id   BINARY(16)   NOT NULL,
    client_id BINARY(16)   NOT NULL,
    joined_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (room_id, client_id)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS members (
    client_id     BINARY(16)      NOT NULL,
    room_id       BINARY(16)      NOT NULL,
    peer_id       BINARY(16)      NULL,
    joined_seq    BIGINT UNSIGNED NOT NULL DEFAULT 0,
    delivered_seq BIGINT UNSIGNED NOT NULL DEFAULT 0,
    read_seq      BIGINT UNSIGNED NOT NULL DEFAULT 0,
    PRIMARY KEY (client_id, room_id)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS invites (
    room_id    BINARY(16)   NOT NULL,
    client_id  BINARY(16)   NOT NULL,
    invited_by BINARY(16)   NOT NULL,
    created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (room_id, client_id)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS contacts (
    client_id  BINARY(16)   NOT NULL,
    contact_id BINARY(16)   NOT NULL,
    created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (client_id, contact_id)
) ENGINE = InnoDB;
