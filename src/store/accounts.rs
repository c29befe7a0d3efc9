//! Accounts in MySQL: names bound to client ids (with their password hashes), and who is who.

use mysql_async::prelude::*;
use mysql_async::TxOpts;

use super::{Store, StoreError};
use crate::ClientId;

/// What `REGISTER` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    Done,
    /// Another client has this name (in any case).
    NameTaken,
    /// This client already has a name.
    AlreadyNamed(String),
}

/// A person as the store knows them: the id, the name if any, and how others see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub id: ClientId,
    pub name: Option<String>,
    /// The name, or the public id `~<16 hex>` (never the client id: it is the credential).
    pub public: String,
}

impl Person {
    /// How others see this person.
    pub fn shown(&self) -> String {
        self.public.clone()
    }
}

impl Store {
    /// Binds `name` (`key`: in lower case) to `client`, with its password hash, in one transaction.
    pub async fn register(
        &self,
        client: ClientId,
        name: &str,
        key: &str,
        hash: &str,
    ) -> Result<Registered, StoreError> {
        self.timed(async {
            let mut conn = self.pool.get_conn().await?;
            let mut tx = conn.start_transaction(TxOpts::default()).await?;
            let current: Option<Option<String>> = tx
                .exec_first(
                    "SELECT name FROM clients WHERE id = ? FOR UPDATE",
                    (&client.as_bytes()[..],),
                )
                .await?;
            if let Some(Some(current)) = current {
                tx.rollback().await?;
                return Ok(Registered::AlreadyNamed(current));
            }
            tx.exec_drop(
                "INSERT IGNORE INTO accounts (name_key, name, client_id, password) VALUES (?, ?, ?, ?)",
                (key, name, &client.as_bytes()[..], hash),
            )
            .await?;
            if tx.affected_rows() == 0 {
                tx.rollback().await?;
                return Ok(Registered::NameTaken);
            }
            tx.exec_drop(
                "UPDATE clients SET name = ? WHERE id = ?",
                (name, &client.as_bytes()[..]),
            )
            .await?;
            tx.commit().await?;
            Ok(Registered::Done)
        })
        .await
    }

    /// The client and password hash registered under `key` (a name in lower case).
    pub async fn account(&self, key: &str) -> Result<Option<(ClientId, String)>, StoreError> {
        let row: Option<(Vec<u8>, String)> = self
            .timed(async {
                let mut conn = self.pool.get_conn().await?;
                conn.exec_first(
                    "SELECT client_id, password FROM accounts WHERE name_key = ?",
                    (key,),
                )
                .await
            })
            .await?;
        Ok(row.and_then(|(id, hash)| Some((ClientId::from_slice(&id)?, hash))))
    }

    /// Replaces the password hash of the account named `key`.
    pub async fn set_password(&self, key: &str, hash: &str) -> Result<(), StoreError> {
        self.timed(async {
            let mut conn = self.pool.get_conn().await?;
            conn.exec_drop(
                "UPDATE accounts SET password = ? WHERE name_key = ?",
                (hash, key),
            )
            .await
        })
        .await
    }

    /// The person named `key` (a name in lower case), if any.
    pub async fn person_named(&self, key: &str) -> Result<Option<Person>, StoreError> {
        self.person_where(
            "c.id = (SELECT client_id FROM accounts WHERE name_key = ?)",
            key.as_bytes(),
        )
        .await
    }

    /// The client with this id, if it exists.
    pub async fn person(&self, id: ClientId) -> Result<Option<Person>, StoreError> {
        self.person_where("c.id = ?", id.as_bytes()).await
    }

    /// The client with this public id (`~<16 hex>` without the `~`), if exactly one has it.
    pub async fn person_public(&self, public: &[u8; 8]) -> Result<Option<Person>, StoreError> {
        self.person_where("c.public_id = ?", public).await
    }

    async fn person_where(
        &self,
        condition: &str,
        key: &[u8],
    ) -> Result<Option<Person>, StoreError> {
        let rows: Vec<(Vec<u8>, Option<String>, String)> = self
            .timed(async {
                let mut conn = self.pool.get_conn().await?;
                conn.exec(
                    format!(
                        "SELECT c.id, c.name, {} FROM clients c WHERE {condition} LIMIT 2",
                        super::shown_sql("c")
                    ),
                    (key,),
                )
                .await
            })
            .await?;
        // Two clients with one public id (64 bits: not in practice): neither is meant.
        if rows.len() != 1 {
            return Ok(None);
        }
        Ok(rows.into_iter().next().and_then(|(id, name, public)| {
            Some(Person {
                id: ClientId::from_slice(&id)?,
                name,
                public,
            })
        }))
    }
}
