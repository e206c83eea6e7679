import Foundation
import MMLiteCore
import PostgresClient

/// What the probes should test.
struct ProbeRequest {
    /// Nodes to test the mmlite plugin on.
    var plugin: Set<String> = []
    /// (subscriber, publisher) pairs to test peer_dsn reachability for.
    var peers: Set<Link> = []
    /// Nodes to test creating the native apply trigger's C function on.
    var nativeApply: Set<String> = []
}

/// Gathers facts about every node (see `NodeFacts`).
struct Inspector {
    let config: MeshConfig
    let connections: Connections
    let console: Console

    var names: ObjectNames { config.names }

    /// Facts without probes, tables resolved from what the nodes have.
    func gather() -> (facts: [NodeFacts], tables: [QualifiedName], unmatched: [TablePattern]) {
        var facts: [NodeFacts] = config.nodes.map { node in
            var nodeFacts = NodeFacts(name: node.name)
            if let error = connections.errors[node.name] { nodeFacts.connectionError = error }
            return nodeFacts
        }
        for index in facts.indices {
            guard let connection = connections[facts[index].name] else { continue }
            do {
                try basics(&facts[index], connection)
                countOthers(&facts[index], connection)
            } catch {
                record(error, in: &facts[index])
            }
        }
        let resolved = resolveTables(config.mesh.tables, existing: facts.filter(\.reachable).map { Set($0.tables.keys) })
        for index in facts.indices {
            guard facts[index].reachable, let connection = connections[facts[index].name] else { continue }
            do {
                try columns(&facts[index], connection, tables: resolved.tables)
                facts[index].conflictObjects = try conflictObjects(connection, tables: resolved.tables)
                facts[index].state = try state(of: facts[index], connection, tables: resolved.tables)
            } catch {
                record(error, in: &facts[index])
            }
        }
        return (facts, resolved.tables, resolved.unmatched)
    }

    /// A failure after connecting: a read the role may not make (or that
    /// failed otherwise) is a read error; a broken connection stays a connection error.
    func record(_ error: Error, in facts: inout NodeFacts) {
        if let read = console.readError(error) { facts.readError = read } else { facts.connectionError = describe(error) }
    }

    func describe(_ error: Error) -> String { console.message(of: error) }

    /// Version, role, privileges, settings and tables of a node.
    private func basics(_ facts: inout NodeFacts, _ connection: PGConnection) throws {
        try server(&facts, connection)
        try rights(&facts, connection)
        try peerRole(&facts, connection)
        try settings(&facts, connection)
        try tables(&facts, connection)
    }

    private func server(_ facts: inout NodeFacts, _ connection: PGConnection) throws {
        let row = try connection.query("""
            SELECT current_setting('server_version_num') AS server_version_num, current_setting('server_version') AS server_version,
                   current_database() AS database, current_user AS role, r.rolsuper AS superuser, r.rolreplication AS replication,
                   has_database_privilege(current_database(), 'CREATE') AS create_on_database,
                   CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pg_create_subscription')
                        THEN pg_has_role('pg_create_subscription', 'MEMBER') ELSE false END AS create_subscription,
                   EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'mmlite') AS plugin_files_installed
            FROM pg_roles r WHERE r.rolname = current_user
            """).first
        facts.versionNumber = row?.int("server_version_num") ?? connection.serverVersionNumber
        facts.versionString = String((row?["server_version"] ?? "").split(separator: " ").first ?? "")
        facts.database = row?["database"] ?? ""
        facts.role = row?["role"] ?? ""
        facts.privileges.superuser = row?.bool("superuser") ?? false
        facts.privileges.replication = row?.bool("replication") ?? false
        facts.privileges.createOnDatabase = row?.bool("create_on_database") ?? false
        facts.privileges.createSubscription = row?.bool("create_subscription") ?? false
        facts.pluginFilesInstalled = row?.bool("plugin_files_installed") ?? false
    }

    /// The rights join needs beyond apply's (see `RequiredRights`).
    private func rights(_ facts: inout NodeFacts, _ connection: PGConnection) throws {
        if facts.privileges.superuser {
            facts.privileges.setSessionReplicationRole = true
            facts.privileges.originFunctions = Set(OriginFunction.allCases)
            return
        }
        if facts.capabilities.grantSetOnParameter {
            facts.privileges.setSessionReplicationRole = try connection.query(
                "SELECT has_parameter_privilege('session_replication_role', 'SET') AS allowed").first?.bool("allowed") ?? false
        }
        let functions = OriginFunction.allCases
        let rows = try connection.query("""
            SELECT f.ordinality AS position, has_function_privilege(f.signature::regprocedure, 'EXECUTE') AS allowed
            FROM unnest($1::text[]) WITH ORDINALITY AS f(signature, ordinality)
            """, [arrayLiteral(functions.map(\.signature))]).named
        for row in rows where row.bool("allowed") == true {
            if let position = row.int("position"), functions.indices.contains(position - 1) {
                facts.privileges.originFunctions.insert(functions[position - 1])
            }
        }
    }

    /// The role this node's peer_dsn names, as this node (the publisher) knows it.
    private func peerRole(_ facts: inout NodeFacts, _ connection: PGConnection) throws {
        guard let node = config.node(named: facts.name), let user = DSN.value("user", in: node.effectivePeerDSN), !user.isEmpty else { return }
        let row = try connection.query("""
            SELECT rolsuper AS superuser, rolreplication AS replication, rolcanlogin AS can_login FROM pg_roles WHERE rolname = $1
            """, [user]).first
        facts.peerRole = PeerRoleFacts(name: user, exists: row != nil, superuser: row?.bool("superuser") ?? false,
                                       replication: row?.bool("replication") ?? false, canLogin: row?.bool("can_login") ?? false)
    }

    /// The settings the checks read; a setting this server does not know stays absent.
    private func settings(_ facts: inout NodeFacts, _ connection: PGConnection) throws {
        let settings = try connection.query("""
            SELECT name AS name, setting AS setting FROM pg_settings WHERE name = ANY($1::text[])
            """, [arrayLiteral(["wal_level", "max_replication_slots", "max_wal_senders", "max_logical_replication_workers",
                                "max_worker_processes", "track_commit_timestamp", "output_plugin_libraries",
                                "max_active_replication_origins", "max_prepared_transactions"])])
        for row in settings.named {
            if let name = row["name"], let value = row["setting"] { facts.settings[name] = value }
        }
    }

    private func tables(_ facts: inout NodeFacts, _ connection: PGConnection) throws {
        let tables = try connection.query("""
            SELECT n.nspname AS schema_name, c.relname AS table_name, c.relreplident::text AS replica_identity,
                   greatest(c.reltuples, 0)::bigint AS row_estimate,
                   EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) AS has_primary_key,
                   pg_has_role(c.relowner, 'USAGE') AS is_owner,
                   (SELECT string_agg(ci.relname::text, ',' ORDER BY ci.relname) FROM pg_index i JOIN pg_class ci ON ci.oid = i.indexrelid
                    WHERE i.indrelid = c.oid AND i.indisunique AND NOT i.indisprimary) AS unique_indexes
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
              AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'
            """)
        for row in tables.named {
            guard let qualified = Catalog.qualifiedName(row) else { continue }
            facts.tables[qualified] = TableFacts(name: qualified, columns: [], hasPrimaryKey: row.bool("has_primary_key") ?? false,
                                                 replicaIdentity: row["replica_identity"] ?? "d", isOwner: row.bool("is_owner") ?? false,
                                                 rowEstimate: row.int64("row_estimate") ?? 0)
            facts.tables[qualified]?.secondaryUniqueIndexes = (row["unique_indexes"] ?? "").split(separator: ",").map(String.init)
        }
    }

    private func columns(_ facts: inout NodeFacts, _ connection: PGConnection, tables: [QualifiedName]) throws {
        let present = tables.filter { facts.tables[$0] != nil }
        guard !present.isEmpty else { return }
        let result = try connection.query("""
            SELECT n.nspname AS schema_name, c.relname AS table_name, a.attname AS column_name,
                   format_type(a.atttypid, a.atttypmod) AS type, pg_get_expr(d.adbin, d.adrelid) AS default_expression,
                   nullif(a.attidentity::text, '') AS identity, array_position(i.indkey::int2[], a.attnum) AS key_position
            FROM pg_attribute a
            JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
            WHERE a.attnum > 0 AND NOT a.attisdropped
              AND c.oid IN (SELECT to_regclass(x) FROM unnest($1::text[]) x)
            ORDER BY n.nspname, c.relname, a.attnum
            """, [arrayLiteral(present.map(\.sql))])
        for row in result.named {
            guard let name = Catalog.qualifiedName(row), let column = row["column_name"], let type = row["type"] else { continue }
            facts.tables[name]?.columns.append(ColumnFacts(name: column, type: type, defaultExpression: row["default_expression"], identity: row["identity"],
                                                                      keyPosition: row.int("key_position")))
        }
    }

    /// The opted-in tables' columns with their change and version tables,
    /// and the conflict registry (what `MeshDrift.conflictProblems` judges).
    private func conflictObjects(_ connection: PGConnection, tables: [QualifiedName]) throws -> DriftFacts? {
        let optedIn = tables.filter { config.tableSettings[$0]?.conflicts != nil }
        guard !optedIn.isEmpty else { return nil }
        return DriftFacts(columns: try Catalog.tableColumns(connection, MeshDrift.tablesToRead(config: config, tables: optedIn)),
                          registry: try Catalog.conflictRegistry(connection) ?? [:])
    }

    /// This mesh's objects on a node.
    func state(of facts: NodeFacts, _ connection: PGConnection, tables: [QualifiedName]) throws -> NodeState {
        let catalog = Catalog(connection, names: names)
        var state = try catalog.state(
            name: facts.name, versionNumber: facts.versionNumber,
            subscriptionColumns: Catalog.SubscriptionColumns(conninfo: facts.privileges.superuser, tables: true))
        state.sequenceOffsets = try catalog.sequenceOffsets(mesh: config.mesh.name)
        state.nodeOffset = try catalog.nodeOffset()
        state.sequences = try catalog.meshSequences(tables, readMaximum: SequencePlanner(config: config).needsColumnMaximum)
        return state
    }

    /// Counts of other slots and subscriptions (for the capacity checks).
    func countOthers(_ facts: inout NodeFacts, _ connection: PGConnection) {
        let others = Catalog(connection, names: names).otherObjects()
        if let slots = others.slots { facts.otherSlots = slots }
        if let subscriptions = others.subscriptions { facts.otherSubscriptions = subscriptions }
    }

    /// Runs the requested probes and stores their results in `facts`.
    func probe(_ facts: inout [NodeFacts], _ request: ProbeRequest) {
        for index in facts.indices {
            guard facts[index].reachable, let connection = connections[facts[index].name] else { continue }
            if request.plugin.contains(facts[index].name) {
                facts[index].pluginProbe = probePlugin(facts[index], connection)
            }
            if request.nativeApply.contains(facts[index].name) {
                facts[index].nativeApplyProbe = probeNativeApply(connection)
            }
            for link in request.peers where link.subscriber == facts[index].name {
                guard let publisher = config.node(named: link.publisher) else { continue }
                facts[index].peerProbes[link.publisher] = probePeer(facts[index], connection, peerDSN: publisher.effectivePeerDSN)
            }
        }
    }

    /// Creates (and drops) a temporary slot with the mmlite plugin: the plugin
    /// is loaded exactly as a real slot would load it.
    private func probePlugin(_ facts: NodeFacts, _ connection: PGConnection) -> ProbeResult {
        guard facts.settings["wal_level"] == "logical" else { return .skipped("wal_level is not logical") }
        guard facts.privileges.superuser || facts.privileges.replication else {
            return .skipped("\(facts.role) may not create replication slots")
        }
        let slot = "mmlite_probe_\(getpid())_\(UInt32.random(in: 0..<UInt32.max))"
        do {
            try connection.execute("SET statement_timeout = '20s'")
            defer { _ = try? connection.execute("RESET statement_timeout") }
            try connection.query("SELECT pg_create_logical_replication_slot($1, 'mmlite', true)", [slot])
            try connection.query("SELECT pg_drop_replication_slot($1)", [slot])
            return .ok
        } catch let error as PGError {
            if error.kind == .connection { return .skipped(console.redact(error.message)) }
            return .failed(sqlState: SQLState(error.sqlState), message: console.redact(error.message))
        } catch {
            return .failed(sqlState: nil, message: describe(error))
        }
    }

    /// Whether the role can create `mmlite.apply_change()` as conflict handling
    /// does: the same CREATE FUNCTION, in pg_temp, rolled back.
    private func probeNativeApply(_ connection: PGConnection) -> ProbeResult {
        do {
            try connection.execute("BEGIN")
            defer { _ = try? connection.execute("ROLLBACK") }
            try connection.execute("SET LOCAL client_min_messages = error")
            try connection.execute(ConflictSQL.nativeApplyProbe)
            return .ok
        } catch let error as PGError {
            if error.kind == .connection { return .skipped(console.redact(error.message)) }
            return .failed(sqlState: SQLState(error.sqlState), message: console.redact(error.message))
        } catch {
            return .failed(sqlState: nil, message: describe(error))
        }
    }

    /// Whether this node's server reaches a peer with `peerDSN`: a subscription
    /// created (with connect = true) inside a transaction that is rolled back.
    private func probePeer(_ facts: NodeFacts, _ connection: PGConnection, peerDSN: String) -> ProbeResult {
        let name = "mmlite_probe_\(getpid())_\(UInt32.random(in: 0..<UInt32.max))"
        do {
            try connection.execute("BEGIN")
            defer { _ = try? connection.execute("ROLLBACK") }
            try connection.execute("SET LOCAL statement_timeout = '20s'; SET LOCAL client_min_messages = error")
            try connection.execute("CREATE SUBSCRIPTION \(name) CONNECTION \(SQL.literal(peerDSN)) PUBLICATION \(names.publication) WITH (connect = true, enabled = false, create_slot = false, slot_name = NONE, copy_data = false)")
            return .ok
        } catch let error as PGError {
            if SQLState(error.sqlState) == .insufficientPrivilege { return .skipped("\(facts.role) may not create subscriptions: \(console.redact(error.message))") }
            if error.kind == .connection { return .skipped(console.redact(error.message)) }
            return .failed(sqlState: SQLState(error.sqlState), message: console.redact(error.message))
        } catch {
            return .failed(sqlState: nil, message: describe(error))
        }
    }
}

/// A text[] literal for a query parameter.
func arrayLiteral(_ values: [String]) -> String {
    "{" + values.map { "\"" + $0.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\"" }.joined(separator: ",") + "}"
}
