import MMLiteCore
import PostgresClient

extension PGConnection {
    /// What this server can do (from the version it reported when connecting).
    var capabilities: ServerCapabilities { ServerCapabilities(versionNumber: serverVersionNumber) }
}

/// The one place that reads each catalog mmlite observes (slots,
/// subscriptions, publication, conflict objects), with the columns each
/// server version has. Every command that needs these facts asks here;
/// decisions about them are made in MMLiteCore. Results are read by column
/// name: every selected expression has an alias.
struct Catalog {
    let connection: PGConnection
    /// The mesh whose objects are read; nil for reads of one named object.
    let names: ObjectNames?
    let capabilities: ServerCapabilities

    init(_ connection: PGConnection, names: ObjectNames? = nil) {
        self.connection = connection
        self.names = names
        capabilities = connection.capabilities
    }

    /// The mesh's name prefix, for reads of all its slots or subscriptions.
    private var prefix: String {
        guard let names else { preconditionFailure("Catalog: a mesh-wide read needs the mesh's names") }
        return names.prefix
    }

    private var publicationName: String {
        guard let names else { preconditionFailure("Catalog: the publication read needs the mesh's names") }
        return names.publication
    }

    /// The server's version and current WAL position.
    struct Server {
        var versionNumber: Int
        /// `server_version` without the build suffix, e.g. "15.20".
        var version: String
        var currentLSN: LSN?
    }

    func server() throws -> Server {
        let row = try connection.query("""
            SELECT pg_catalog.current_setting('server_version') AS server_version,
                   pg_catalog.current_setting('server_version_num') AS server_version_num,
                   pg_catalog.pg_current_wal_lsn()::text AS current_lsn
            """).first
        return Server(versionNumber: row?.int("server_version_num") ?? connection.serverVersionNumber,
                      version: String((row?["server_version"] ?? "").split(separator: " ").first ?? ""),
                      currentLSN: row?["current_lsn"].flatMap { LSN($0) })
    }

    /// The mesh's publication and its tables; nil when it does not exist.
    func publication() throws -> PublicationState? {
        guard let row = try connection.query("SELECT p.puballtables AS all_tables FROM pg_catalog.pg_publication p WHERE p.pubname = $1",
                                             [publicationName]).first else { return nil }
        let allTables = row.bool("all_tables") ?? false
        // pg_publication_rel, not pg_publication_tables: the view opens every
        // table and waits for its lock (e.g. one an interrupted migration holds).
        let members = try connection.query(allTables ? """
            SELECT t.schemaname AS schema_name, t.tablename AS table_name FROM pg_catalog.pg_publication_tables t WHERE t.pubname = $1
            """ : """
            SELECT n.nspname AS schema_name, c.relname AS table_name
            FROM pg_catalog.pg_publication_rel r JOIN pg_catalog.pg_publication p ON p.oid = r.prpubid
            JOIN pg_catalog.pg_class c ON c.oid = r.prrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            WHERE p.pubname = $1
            """, [publicationName])
        return PublicationState(tables: Set(members.named.compactMap(Self.qualifiedName)), allTables: allTables)
    }

    /// This mesh's slots (or the one named `name`), with the walsender's replay lag.
    func slots(named name: String? = nil) throws -> [String: SlotState] {
        let result = try connection.query("""
            SELECT s.slot_name::text AS slot_name, coalesce(s.plugin::text, '') AS plugin, s.database::text AS database,
                   s.active AS active, s.active_pid AS active_pid, s.restart_lsn::text AS restart_lsn,
                   s.confirmed_flush_lsn::text AS confirmed_flush_lsn, s.wal_status AS wal_status,
                   extract(epoch FROM r.replay_lag)::float8 AS replay_lag_seconds
            FROM pg_catalog.pg_replication_slots s LEFT JOIN pg_catalog.pg_stat_replication r ON r.pid = s.active_pid
            WHERE \(name == nil ? "left(s.slot_name::text, length($1)) = $1" : "s.slot_name = $1")
            """, [name ?? prefix])
        var slots: [String: SlotState] = [:]
        for row in result.named {
            guard let slotName = row["slot_name"] else { continue }
            var slot = SlotState(plugin: row["plugin"] ?? "", database: row["database"], active: row.bool("active") ?? false)
            slot.activePID = row.int("active_pid")
            slot.restartLSN = row["restart_lsn"].flatMap { LSN($0) }
            slot.confirmedFlushLSN = row["confirmed_flush_lsn"].flatMap { LSN($0) }
            slot.walStatus = row["wal_status"]
            slot.replayLagSeconds = row.double("replay_lag_seconds")
            slots[slotName] = slot
        }
        return slots
    }

    /// What to read beyond the columns every reader gets.
    struct SubscriptionColumns {
        /// `subconninfo` (only a superuser may read it).
        var conninfo = false
        /// The origin's progress (`pg_replication_origin_progress`, superuser by default).
        var progress = false
        /// The tables of each subscription (`pg_subscription_rel`).
        var tables = false
    }

    /// This mesh's subscriptions in the current database (or the one named `name`).
    func subscriptions(_ columns: SubscriptionColumns = SubscriptionColumns(), named name: String? = nil) throws -> [String: SubscriptionState] {
        let stats = capabilities.subscriptionStats
        // PostgreSQL 13 grants pg_subscription.oid to superusers only (14+ to
        // everyone); naming the column without the privilege fails the whole
        // query. pg_stat_subscription (a view owned by the superuser) lists
        // every subscription with its subid in every major, by name across all
        // databases. The same name in two databases gives two oids: the one
        // with tables in this database's pg_subscription_rel (readable by
        // everyone) is this database's; a name still left with two has none.
        let oidReadable = try connection.query(
            "SELECT pg_catalog.has_column_privilege('pg_catalog.pg_subscription', 'oid', 'SELECT') AS readable").first?.bool("readable") ?? false
        let oid = oidReadable ? "s.oid" : """
            (SELECT CASE WHEN count(DISTINCT x.subid) = 1 THEN min(x.subid)
                         ELSE (SELECT CASE WHEN count(DISTINCT r.srsubid) = 1 THEN min(r.srsubid) END
                               FROM pg_catalog.pg_subscription_rel r
                               WHERE r.srsubid IN (SELECT y.subid FROM pg_catalog.pg_stat_subscription y WHERE y.subname = s.subname)) END
             FROM pg_catalog.pg_stat_subscription x WHERE x.subname = s.subname)
            """
        let result = try connection.query("""
            SELECT s.subid::text AS oid, s.subname::text AS name, s.subenabled AS enabled, s.subslotname::text AS slot_name,
                   array_to_string(s.subpublications, ',') AS publications,
                   s.conninfo AS conninfo, s.origin AS origin, s.skip_lsn AS skip_lsn,
                   w.pid AS worker_pid, w.received_lsn::text AS received_lsn,
                   (SELECT count(*) FROM pg_catalog.pg_stat_subscription x WHERE x.subid = s.subid AND x.pid IS NOT NULL) AS workers,
                   \(stats ? "st.apply_error_count" : "NULL::bigint") AS apply_errors,
                   \(stats ? "st.sync_error_count" : "NULL::bigint") AS sync_errors,
                   \(columns.progress ? "pg_catalog.pg_replication_origin_progress('pg_' || s.subid, true)::text" : "NULL::text") AS applied_lsn
            FROM (SELECT \(oid) AS subid, s.subname, s.subenabled, s.subslotname, s.subpublications,
                         \(columns.conninfo ? "s.subconninfo" : "NULL::text") AS conninfo,
                         \(capabilities.originNone ? "s.suborigin" : "NULL::text") AS origin,
                         \(capabilities.subscriptionSkip ? "s.subskiplsn::text" : "NULL::text") AS skip_lsn
                  FROM pg_catalog.pg_subscription s
                  WHERE s.subdbid = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())
                    AND \(name == nil ? "left(s.subname::text, length($1)) = $1" : "s.subname = $1")) s
            LEFT JOIN LATERAL (SELECT a.pid, a.received_lsn FROM pg_catalog.pg_stat_subscription a
                               WHERE a.subid = s.subid AND a.relid IS NULL ORDER BY a.pid LIMIT 1) w ON true
            \(stats ? "LEFT JOIN pg_catalog.pg_stat_subscription_stats st ON st.subid = s.subid" : "")
            """, [name ?? prefix])
        var subscriptions: [String: SubscriptionState] = [:]
        for row in result.named {
            guard let subscriptionName = row["name"] else { continue }
            var state = SubscriptionState(enabled: row.bool("enabled") ?? false, slotName: row["slot_name"],
                                          publications: (row["publications"] ?? "").split(separator: ",").map(String.init),
                                          conninfo: row["conninfo"], origin: row["origin"])
            state.oid = row["oid"]
            state.workerPID = row.int("worker_pid")
            state.workers = row.int("workers") ?? 0
            state.receivedLSN = row["received_lsn"].flatMap { LSN($0) }
            state.applyErrors = row.int64("apply_errors")
            state.syncErrors = row.int64("sync_errors")
            state.skipLSN = row["skip_lsn"].flatMap { LSN($0) }.flatMap { $0 == .zero ? nil : $0 }
            state.appliedUpTo = row["applied_lsn"].flatMap { LSN($0) }
            subscriptions[subscriptionName] = state
        }
        if columns.tables, !subscriptions.isEmpty {
            let relations = try connection.query("""
                SELECT r.srsubid::text AS subscription_oid, n.nspname::text AS schema_name, c.relname::text AS table_name
                FROM pg_catalog.pg_subscription_rel r
                JOIN pg_catalog.pg_class c ON c.oid = r.srrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                WHERE r.srsubid = ANY($1::oid[])
                """, [arrayLiteral(subscriptions.values.compactMap(\.oid))])
            let byOID = Dictionary(grouping: relations.named, by: { $0["subscription_oid"] ?? "" })
            for (key, state) in subscriptions {
                subscriptions[key]?.tables = Set((byOID[state.oid ?? ""] ?? []).compactMap(Self.qualifiedName))
            }
        }
        return subscriptions
    }

    /// This mesh's objects on the node.
    func state(name: String, versionNumber: Int, subscriptionColumns: SubscriptionColumns = SubscriptionColumns()) throws -> NodeState {
        NodeState(name: name, versionNumber: versionNumber, publication: try publication(),
                  slots: try slots(), subscriptions: try subscriptions(subscriptionColumns))
    }

    /// Slots and subscriptions that are not this mesh's (they use the same
    /// settings' capacity); nil where the count could not be read.
    func otherObjects() -> (slots: Int?, subscriptions: Int?) {
        let slots = try? connection.query("""
            SELECT count(*) FILTER (WHERE left(s.slot_name::text, length($1)) <> $1) AS others FROM pg_catalog.pg_replication_slots s
            """, [prefix]).first?.int("others")
        let subscriptions = try? connection.query("""
            SELECT count(*) FILTER (WHERE left(s.subname::text, length($1)) <> $1) AS others FROM pg_catalog.pg_subscription s
            """, [prefix]).first?.int("others")
        return (slots ?? nil, subscriptions ?? nil)
    }

    /// Whether the conflict log (mmlite.conflicts) exists (mesh-independent).
    static func conflictLogExists(_ connection: PGConnection) throws -> Bool {
        try connection.query("SELECT pg_catalog.to_regclass('mmlite.conflicts') IS NOT NULL AS present").first?.bool("present") ?? false
    }

    /// `mmlite.conflict_tables`: definition by table name; nil when it does not exist (mesh-independent).
    /// A read that fails (a role without SELECT on it) throws: taking it for "nothing installed" would misreport every opted-in table.
    static func conflictRegistry(_ connection: PGConnection) throws -> [String: String]? {
        guard try connection.query("SELECT pg_catalog.to_regclass('mmlite.conflict_tables') IS NOT NULL AS present").first?.bool("present") == true
        else { return nil }
        var result: [String: String] = [:]
        for row in try connection.query("SELECT t.table_name AS table_name, t.definition AS definition FROM mmlite.conflict_tables t").named {
            if let name = row["table_name"], let definition = row["definition"] { result[name] = definition }
        }
        return result
    }

    /// The user tables (regular and partitioned, not partitions) that
    /// `mesh.tables` patterns resolve against (as doctor's inspection sees them).
    static func userTables(_ connection: PGConnection) throws -> Set<QualifiedName> {
        let rows = try connection.query("""
            SELECT n.nspname AS schema_name, c.relname AS table_name
            FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
              AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'
            """).named
        return Set(rows.compactMap(qualifiedName))
    }

    /// The columns of each of `tables` that exists, in column order, with
    /// primary-key positions; types printed as the apply worker (search_path
    /// = '') reads them, as conflict handling's definition hash needs them.
    static func tableColumns(_ connection: PGConnection, _ tables: [QualifiedName]) throws -> [QualifiedName: [ConflictSQL.Column]] {
        guard !tables.isEmpty else { return [:] }
        try connection.execute("BEGIN; SET LOCAL search_path TO ''")
        defer { _ = try? connection.execute("ROLLBACK") }
        return try tableColumnsInTransaction(connection, tables)
    }

    /// The same, inside a transaction the caller opened with `SET LOCAL search_path TO ''`.
    static func tableColumnsInTransaction(_ connection: PGConnection, _ tables: [QualifiedName]) throws -> [QualifiedName: [ConflictSQL.Column]] {
        guard !tables.isEmpty else { return [:] }
        let result = try connection.query("""
            SELECT n.nspname AS schema_name, c.relname AS table_name, a.attname AS column_name,
                   pg_catalog.format_type(a.atttypid, a.atttypmod) AS type,
                   pg_catalog.array_position(i.indkey::int2[], a.attnum) AS key_position,
                   a.attgenerated <> '' AS generated, a.attidentity = 'a' AS identity_always
            FROM pg_catalog.pg_attribute a
            JOIN pg_catalog.pg_class c ON c.oid = a.attrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            LEFT JOIN pg_catalog.pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
            WHERE a.attrelid IN (SELECT pg_catalog.to_regclass(x) FROM pg_catalog.unnest($1::text[]) x) AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY n.nspname, c.relname, a.attnum
            """, [arrayLiteral(tables.map(\.sql))])
        var columns: [QualifiedName: [ConflictSQL.Column]] = [:]
        for row in result.named {
            guard let table = qualifiedName(row), let name = row["column_name"], let type = row["type"] else { continue }
            columns[table, default: []].append(ConflictSQL.Column(name: name, type: type, keyPosition: row.int("key_position"),
                                                                   generated: row.bool("generated") ?? false,
                                                                   identityAlways: row.bool("identity_always") ?? false))
        }
        return columns
    }

    /// Sizes of the conflict log and of the change and version tables.
    struct ConflictStorage {
        /// nil: no conflict log on this node.
        var logBytes: Int64?
        var logRows: Int64?
        var changeTables = 0, changeBytes: Int64 = 0, changeRows: Int64 = 0
        var versionTables = 0, versionBytes: Int64 = 0, versionRows: Int64 = 0
        /// Change tables whose apply trigger is the native (C) one.
        var nativeApplyTables = 0
        /// The role that installed conflict handling (owns schema mmlite), and whether it is a superuser.
        var installer: (role: String, superuser: Bool)?
        /// Whether mmlite's extension files (and so mmlite.so) are installed.
        var pluginInstalled: Bool?
    }

    func conflictStorage() throws -> ConflictStorage? {
        guard let row = try connection.query(ConflictMaintenance.sizes).first else { return nil }
        var storage = ConflictStorage(logBytes: row.int64("log_bytes"))
        storage.changeTables = row.int("change_tables") ?? 0
        storage.changeBytes = row.int64("change_bytes") ?? 0
        storage.changeRows = row.int64("change_rows") ?? 0
        storage.versionTables = row.int("version_tables") ?? 0
        storage.versionBytes = row.int64("version_bytes") ?? 0
        storage.versionRows = row.int64("version_rows") ?? 0
        storage.nativeApplyTables = row.int("native_apply_tables") ?? 0
        if let role = row["installer"], let superuser = row.bool("installer_superuser") { storage.installer = (role, superuser) }
        storage.pluginInstalled = row.bool("plugin_installed")
        // The log holds rows of user tables: a monitoring role may see its size but not count them.
        if storage.logBytes != nil, row.bool("log_readable") == true {
            storage.logRows = try connection.query(ConflictMaintenance.logRows).first?.int64("log_rows")
        }
        return storage
    }

    static func qualifiedName(_ row: PGRow) -> QualifiedName? {
        guard let schema = row["schema_name"], let name = row["table_name"] else { return nil }
        return QualifiedName(schema: schema, name: name)
    }
}
