use crate::runtime::block_on;
use crate::storage::{Storage, StorageError};

use super::OrmError;

/// A user: the author of nodes, groups and comments, identified by email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    id: i32,
    email: String,
    first_name: String,
    last_name: String,
    institution: String,
}

impl User {
    fn from_row(row: &tokio_postgres::Row) -> User {
        User {
            id: row.get("id"),
            email: row.get("email"),
            first_name: row.get("first_name"),
            last_name: row.get("last_name"),
            institution: row.get("institution"),
        }
    }

    /// The user with `email`, created (with empty names) if there is none.
    pub fn get_or_create(storage: &Storage, email: &str) -> Result<User, StorageError> {
        block_on(User::get_or_create_async(storage, email))
    }

    /// [`User::get_or_create`], async.
    pub async fn get_or_create_async(storage: &Storage, email: &str) -> Result<User, StorageError> {
        storage.ensure_user(email).await?;
        let rows = storage.db().query("SELECT * FROM db_dbuser WHERE email = $1", &[&email]).await?;
        Ok(User::from_row(&rows[0]))
    }

    /// The profile's default user.
    pub fn default_user(storage: &Storage) -> Result<User, OrmError> {
        block_on(User::default_user_async(storage))
    }

    /// [`User::default_user`], async.
    pub async fn default_user_async(storage: &Storage) -> Result<User, OrmError> {
        let email = storage.profile().default_user_email();
        let email = email.ok_or_else(|| OrmError::NoDefaultUser(storage.profile().name().to_owned()))?;
        Ok(User::get_or_create_async(storage, email).await?)
    }

    /// All users, by id.
    pub fn list(storage: &Storage) -> Result<Vec<User>, StorageError> {
        block_on(User::list_async(storage))
    }

    /// [`User::list`], async.
    pub async fn list_async(storage: &Storage) -> Result<Vec<User>, StorageError> {
        Ok(storage.db().query("SELECT * FROM db_dbuser ORDER BY id", &[]).await?.iter().map(User::from_row).collect())
    }

    /// Sets first name, last name and institution.
    pub fn set_names(
        &mut self,
        storage: &Storage,
        first: &str,
        last: &str,
        institution: &str,
    ) -> Result<(), StorageError> {
        block_on(self.set_names_async(storage, first, last, institution))
    }

    /// [`User::set_names`], async.
    pub async fn set_names_async(
        &mut self,
        storage: &Storage,
        first: &str,
        last: &str,
        institution: &str,
    ) -> Result<(), StorageError> {
        storage
            .db()
            .query(
                "UPDATE db_dbuser SET first_name = $2, last_name = $3, institution = $4 WHERE id = $1",
                &[&self.id, &first, &last, &institution],
            )
            .await?;
        (self.first_name, self.last_name, self.institution) =
            (first.to_owned(), last.to_owned(), institution.to_owned());
        Ok(())
    }

    /// The database id.
    pub fn pk(&self) -> i32 {
        self.id
    }

    /// The email.
    pub fn email(&self) -> &str {
        &self.email
    }

    /// First name, last name and institution.
    pub fn names(&self) -> (&str, &str, &str) {
        (&self.first_name, &self.last_name, &self.institution)
    }
}
