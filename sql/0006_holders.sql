-- 0006_holders: find the delivery rights a node holds.
--
-- A node restarted under the same --node-id gives up, at start, the rights its previous process held
-- (that process is gone: the node lock in MySQL proves it), so that their clients' new sessions need
-- not wait for a handoff that will never come. Operators and ONLINE list the holders of live nodes.

ALTER TABLE cursors ADD KEY cursors_holder (holder_node);
