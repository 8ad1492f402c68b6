//! aiida-core's `core.psql_dos` schema at alembic head `main_0002`, written from the reference.

/// The alembic revision aiida-core 2.9 expects.
pub const SCHEMA_HEAD: &str = "main_0002";

/// The tables a storage clean empties: all but `alembic_version` and `db_dbsetting`.
pub(crate) const DATA_TABLES: &[&str] = &[
    "db_dbgroup_dbnodes",
    "db_dbcomment",
    "db_dblog",
    "db_dblink",
    "db_dbgroup",
    "db_dbnode",
    "db_dbauthinfo",
    "db_dbcomputer",
    "db_dbuser",
];

/// Creates every table, index and constraint, and records the head revision.
pub(crate) const CREATE: &str = r#"
CREATE TABLE db_dbuser (
    id serial PRIMARY KEY,
    email varchar(254) NOT NULL,
    first_name varchar(254) NOT NULL,
    last_name varchar(254) NOT NULL,
    institution varchar(254) NOT NULL,
    CONSTRAINT db_dbuser_email_key UNIQUE (email)
);
CREATE INDEX ix_pat_db_dbuser_email ON db_dbuser (email varchar_pattern_ops);

CREATE TABLE db_dbcomputer (
    id serial PRIMARY KEY,
    uuid uuid NOT NULL,
    label varchar(255) NOT NULL,
    hostname varchar(255) NOT NULL,
    description text NOT NULL,
    scheduler_type varchar(255) NOT NULL,
    transport_type varchar(255) NOT NULL,
    metadata jsonb NOT NULL,
    CONSTRAINT db_dbcomputer_label_key UNIQUE (label),
    CONSTRAINT db_dbcomputer_uuid_key UNIQUE (uuid)
);
CREATE INDEX ix_pat_db_dbcomputer_label ON db_dbcomputer (label varchar_pattern_ops);

CREATE TABLE db_dbauthinfo (
    id serial PRIMARY KEY,
    aiidauser_id integer NOT NULL,
    dbcomputer_id integer NOT NULL,
    metadata jsonb NOT NULL,
    auth_params jsonb NOT NULL,
    enabled boolean NOT NULL,
    CONSTRAINT db_dbauthinfo_aiidauser_id_dbcomputer_id_key UNIQUE (aiidauser_id, dbcomputer_id),
    CONSTRAINT db_dbauthinfo_aiidauser_id_fkey FOREIGN KEY (aiidauser_id)
        REFERENCES db_dbuser (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT db_dbauthinfo_dbcomputer_id_fkey FOREIGN KEY (dbcomputer_id)
        REFERENCES db_dbcomputer (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX ix_db_dbauthinfo_aiidauser_id ON db_dbauthinfo (aiidauser_id);
CREATE INDEX ix_db_dbauthinfo_dbcomputer_id ON db_dbauthinfo (dbcomputer_id);

CREATE TABLE db_dbnode (
    id serial PRIMARY KEY,
    uuid uuid NOT NULL,
    node_type varchar(255) NOT NULL,
    process_type varchar(255),
    label varchar(255) NOT NULL,
    description text NOT NULL,
    ctime timestamp with time zone NOT NULL,
    mtime timestamp with time zone NOT NULL,
    attributes jsonb,
    extras jsonb,
    repository_metadata jsonb NOT NULL,
    dbcomputer_id integer,
    user_id integer NOT NULL,
    CONSTRAINT db_dbnode_uuid_key UNIQUE (uuid),
    CONSTRAINT db_dbnode_dbcomputer_id_fkey FOREIGN KEY (dbcomputer_id)
        REFERENCES db_dbcomputer (id) ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT db_dbnode_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES db_dbuser (id) ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX ix_db_dbnode_node_type ON db_dbnode (node_type);
CREATE INDEX ix_db_dbnode_process_type ON db_dbnode (process_type);
CREATE INDEX ix_db_dbnode_label ON db_dbnode (label);
CREATE INDEX ix_db_dbnode_ctime ON db_dbnode (ctime);
CREATE INDEX ix_db_dbnode_mtime ON db_dbnode (mtime);
CREATE INDEX ix_db_dbnode_dbcomputer_id ON db_dbnode (dbcomputer_id);
CREATE INDEX ix_db_dbnode_user_id ON db_dbnode (user_id);
CREATE INDEX ix_pat_db_dbnode_node_type ON db_dbnode (node_type varchar_pattern_ops);
CREATE INDEX ix_pat_db_dbnode_process_type ON db_dbnode (process_type varchar_pattern_ops);
CREATE INDEX ix_pat_db_dbnode_label ON db_dbnode (label varchar_pattern_ops);

CREATE TABLE db_dblink (
    id serial PRIMARY KEY,
    input_id integer NOT NULL,
    output_id integer NOT NULL,
    label varchar(255) NOT NULL,
    type varchar(255) NOT NULL,
    CONSTRAINT db_dblink_input_id_fkey FOREIGN KEY (input_id)
        REFERENCES db_dbnode (id) DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT db_dblink_output_id_fkey FOREIGN KEY (output_id)
        REFERENCES db_dbnode (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX ix_db_dblink_input_id ON db_dblink (input_id);
CREATE INDEX ix_db_dblink_output_id ON db_dblink (output_id);
CREATE INDEX ix_db_dblink_label ON db_dblink (label);
CREATE INDEX ix_db_dblink_type ON db_dblink (type);
CREATE INDEX ix_pat_db_dblink_label ON db_dblink (label varchar_pattern_ops);
CREATE INDEX ix_pat_db_dblink_type ON db_dblink (type varchar_pattern_ops);

CREATE TABLE db_dbgroup (
    id serial PRIMARY KEY,
    uuid uuid NOT NULL,
    label varchar(255) NOT NULL,
    type_string varchar(255) NOT NULL,
    time timestamp with time zone NOT NULL,
    description text NOT NULL,
    extras jsonb NOT NULL,
    user_id integer NOT NULL,
    CONSTRAINT db_dbgroup_label_type_string_key UNIQUE (label, type_string),
    CONSTRAINT db_dbgroup_uuid_key UNIQUE (uuid),
    CONSTRAINT db_dbgroup_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES db_dbuser (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX ix_db_dbgroup_label ON db_dbgroup (label);
CREATE INDEX ix_db_dbgroup_type_string ON db_dbgroup (type_string);
CREATE INDEX ix_db_dbgroup_user_id ON db_dbgroup (user_id);
CREATE INDEX ix_pat_db_dbgroup_label ON db_dbgroup (label varchar_pattern_ops);
CREATE INDEX ix_pat_db_dbgroup_type_string ON db_dbgroup (type_string varchar_pattern_ops);

CREATE TABLE db_dbgroup_dbnodes (
    id serial PRIMARY KEY,
    dbnode_id integer NOT NULL,
    dbgroup_id integer NOT NULL,
    CONSTRAINT db_dbgroup_dbnodes_dbgroup_id_dbnode_id_key UNIQUE (dbgroup_id, dbnode_id),
    CONSTRAINT db_dbgroup_dbnodes_dbnode_id_fkey FOREIGN KEY (dbnode_id)
        REFERENCES db_dbnode (id) DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT db_dbgroup_dbnodes_dbgroup_id_fkey FOREIGN KEY (dbgroup_id)
        REFERENCES db_dbgroup (id) DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX ix_db_dbgroup_dbnodes_dbnode_id ON db_dbgroup_dbnodes (dbnode_id);
CREATE INDEX ix_db_dbgroup_dbnodes_dbgroup_id ON db_dbgroup_dbnodes (dbgroup_id);

CREATE TABLE db_dblog (
    id serial PRIMARY KEY,
    uuid uuid NOT NULL,
    time timestamp with time zone NOT NULL,
    loggername varchar(255) NOT NULL,
    levelname varchar(50) NOT NULL,
    dbnode_id integer NOT NULL,
    message text NOT NULL,
    metadata jsonb NOT NULL,
    CONSTRAINT db_dblog_uuid_key UNIQUE (uuid),
    CONSTRAINT db_dblog_dbnode_id_fkey FOREIGN KEY (dbnode_id)
        REFERENCES db_dbnode (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX ix_db_dblog_dbnode_id ON db_dblog (dbnode_id);
CREATE INDEX ix_db_dblog_levelname ON db_dblog (levelname);
CREATE INDEX ix_db_dblog_loggername ON db_dblog (loggername);
CREATE INDEX ix_pat_db_dblog_levelname ON db_dblog (levelname varchar_pattern_ops);
CREATE INDEX ix_pat_db_dblog_loggername ON db_dblog (loggername varchar_pattern_ops);

CREATE TABLE db_dbcomment (
    id serial PRIMARY KEY,
    uuid uuid NOT NULL,
    dbnode_id integer NOT NULL,
    ctime timestamp with time zone NOT NULL,
    mtime timestamp with time zone NOT NULL,
    user_id integer NOT NULL,
    content text NOT NULL,
    CONSTRAINT db_dbcomment_uuid_key UNIQUE (uuid),
    CONSTRAINT db_dbcomment_dbnode_id_fkey FOREIGN KEY (dbnode_id)
        REFERENCES db_dbnode (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT db_dbcomment_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES db_dbuser (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX ix_db_dbcomment_dbnode_id ON db_dbcomment (dbnode_id);
CREATE INDEX ix_db_dbcomment_user_id ON db_dbcomment (user_id);

CREATE TABLE db_dbsetting (
    id serial PRIMARY KEY,
    key varchar(1024) NOT NULL,
    val jsonb,
    description text NOT NULL,
    time timestamp with time zone NOT NULL,
    CONSTRAINT db_dbsetting_key_key UNIQUE (key)
);
CREATE INDEX ix_pat_db_dbsetting_key ON db_dbsetting (key varchar_pattern_ops);

CREATE TABLE alembic_version (
    version_num varchar(32) NOT NULL,
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);
INSERT INTO alembic_version (version_num) VALUES ('main_0002');
"#;
