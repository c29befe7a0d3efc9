-- 0005_bans: bans shared by the whole cluster (chat-admin ban/unban).
--
-- One row per ban: a client id, an IP address or a network (CIDR), in its canonical text form.
-- Every node loads the table at start, again when `chat:bans` is published in Redis ("look now"),
-- and every --bans-poll seconds (the table is the truth; a lost broadcast only delays a ban). Nodes
-- merge these bans with their own --ban/--ban-file bans.

CREATE TABLE IF NOT EXISTS bans (
    entry      VARCHAR(64)  NOT NULL,
    reason     VARCHAR(255) NULL,
    created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (entry)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
