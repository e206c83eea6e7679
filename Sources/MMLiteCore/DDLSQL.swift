/// The SQL of `mmlite ddl` (see `DDLProcedure` and docs/operations.md,
/// "Schema changes").
public enum DDLSQL {
    /// The fence: while a migration changes a table, local writes to it fail
    /// with serialization_failure (40001, "retry"), so none is made with the
    /// old columns after the links were drained. Ordinary (ENABLE ORIGIN):
    /// it never fires in an apply worker, so arriving changes still apply.
    /// Writes cannot be held instead: a held writer keeps its lock on the
    /// table, which the migration's own ALTER then waits for.
    public static let fenceFunction = """
        CREATE SCHEMA IF NOT EXISTS mmlite;
        CREATE OR REPLACE FUNCTION mmlite.ddl_fence() RETURNS trigger
        LANGUAGE plpgsql AS $mmlite$
        BEGIN
            RAISE EXCEPTION 'mmlite ddl is changing table %.% on every node of the mesh', TG_TABLE_SCHEMA, TG_TABLE_NAME
                USING ERRCODE = 'serialization_failure',
                      HINT = 'Retry the transaction in a moment: it then sees the new definition.';
        END
        $mmlite$
        """

    public static let fenceTrigger = "mmlite_ddl_fence"

    public static func fence(_ table: QualifiedName) -> String {
        """
        DROP TRIGGER IF EXISTS \(fenceTrigger) ON \(table.sql);
        CREATE TRIGGER \(fenceTrigger) BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON \(table.sql)
            FOR EACH STATEMENT EXECUTE FUNCTION mmlite.ddl_fence()
        """
    }

    public static func unfence(_ table: QualifiedName) -> String {
        "DROP TRIGGER IF EXISTS \(fenceTrigger) ON \(table.sql)"
    }

    /// Tables with a fence (column names schema_name, table_name).
    public static let fencedTables = """
        SELECT n.nspname AS schema_name, c.relname AS table_name
        FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE t.tgname = 'mmlite_ddl_fence' ORDER BY 1, 2
        """

    /// How long the migration's statements wait for a lock before the
    /// migration gives up (and changes nothing).
    public static func lockTimeout(seconds: Int) -> String { "SET LOCAL lock_timeout = '\(seconds)s'" }

    /// User tables (regular, partitioned) the current transaction holds an
    /// ACCESS EXCLUSIVE lock on: what the migration's statements change.
    public static let lockedTables = """
        SELECT n.nspname AS schema_name, c.relname AS table_name
        FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_class c ON c.oid = l.relation JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE l.pid = pg_catalog.pg_backend_pid() AND l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock'
          AND c.relkind IN ('r', 'p') AND n.nspname <> 'mmlite'
        ORDER BY 1, 2
        """

    /// Every user table (schema_name, table_name), as the transaction sees it.
    public static let userTables = """
        SELECT n.nspname AS schema_name, c.relname AS table_name
        FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
          AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'mmlite') AND n.nspname !~ '^pg_'
        ORDER BY 1, 2
        """

    /// The record of a migration, written in its own prepared transaction:
    /// a node that has it committed the migration.
    public static func record(id: String, statements: [String]) -> String {
        """
        CREATE SCHEMA IF NOT EXISTS mmlite;
        CREATE TABLE IF NOT EXISTS mmlite.migrations (
            id text PRIMARY KEY,
            statements text NOT NULL,
            prepared_at timestamptz NOT NULL DEFAULT pg_catalog.now()
        );
        INSERT INTO mmlite.migrations (id, statements) VALUES (\(SQL.literal(id)), \(SQL.literal(statements.joined(separator: ";\n"))))
        """
    }

    /// Whether this node has the migration log (column present); only then ask `migrationRecorded`.
    public static let migrationLogExists = "SELECT pg_catalog.to_regclass('mmlite.migrations') IS NOT NULL AS present"

    /// Whether migration `id` committed on this node (column recorded: 0 or 1).
    public static func migrationRecorded(id: String) -> String {
        """
        SELECT count(*) AS recorded FROM mmlite.migrations WHERE id = \(SQL.literal(id))
        """
    }

    /// The transaction name of migration `id` of `mesh`.
    public static func gid(mesh: String, id: String) -> String { "mmlite_ddl_\(mesh)_\(id)" }

    /// This mesh's prepared migrations in the current database (column gid).
    public static func preparedMigrations(mesh: String) -> String {
        """
        SELECT gid FROM pg_catalog.pg_prepared_xacts
        WHERE database = pg_catalog.current_database() AND pg_catalog.starts_with(gid, \(SQL.literal("mmlite_ddl_\(mesh)_")))
        ORDER BY gid
        """
    }

    /// The replication origin the migration's own writes carry, so that no
    /// node sends them on: each node makes them itself.
    public static func originSetup(_ origin: String) -> [String] {
        ["SELECT pg_catalog.pg_replication_origin_create(\(SQL.literal(origin))) WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_replication_origin WHERE roname = \(SQL.literal(origin)))",
         "SELECT pg_catalog.pg_replication_origin_session_setup(\(SQL.literal(origin)))"]
    }

    public static let originReset = "SELECT pg_catalog.pg_replication_origin_session_reset()"

    /// A subscriber learns the publication's new tables; they are empty everywhere, so nothing is copied.
    public static func refresh(_ subscription: String) -> String {
        "ALTER SUBSCRIPTION \(SQL.identifier(subscription)) REFRESH PUBLICATION WITH (copy_data = false)"
    }

    public static func prepare(gid: String) -> String { "PREPARE TRANSACTION \(SQL.literal(gid))" }
    public static func commitPrepared(gid: String) -> String { "COMMIT PREPARED \(SQL.literal(gid))" }
    public static func rollbackPrepared(gid: String) -> String { "ROLLBACK PREPARED \(SQL.literal(gid))" }
}
