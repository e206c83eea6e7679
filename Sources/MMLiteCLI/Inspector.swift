import Foundation
import MMLiteCore
import PostgresClient

/// What the probes should test.
struct ProbeRequest {
    /// Nodes to test the mmlite plugin on.
    var plugin: Set<String> = []
    /// (subscriber, publisher) pairs to test peer_dsn reachability for.
    var peers: Set<Link> = []
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
                facts[index].connectionError = describe(error)
            }
        }
        let resolved = resolveTables(config.mesh.tables, existing: facts.filter(\.reachable).map { Set($0.tables.keys) })
        for index in facts.indices {
            guard facts[index].reachable, let connection = connections[facts[index].name] else { continue }
            do {
                try columns(&facts[index], connection, tables: resolved.tables)
                facts[index].state = try state(of: facts[index], connection, tables: resolved.tables)
            } catch {
                facts[index].connectionError = describe(error)
            }
        }
        return (facts, resolved.tables, resolved.unmatched)
    }

    func describe(_ error: Error) -> String {
        if let error = error as? PGError { return console.redact(error.message) }
        return console.redact("\(error)")
    }

    private func basics(_ facts: inout NodeFacts, _ connection: PGConnection) throws {
        let row = try connection.query("""
            SELECT current_setting('server_version_num'), current_setting('server_version'), current_database(),
                   current_user, r.rolsuper, r.rolreplication,
                   has_database_privilege(current_database(), 'CREATE'),
                   CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pg_create_subscription')
                        THEN pg_has_role('pg_create_subscription', 'MEMBER') ELSE false END,
                   EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'mmlite')
            FROM pg_roles r WHERE r.rolname = current_user
            """)
        facts.versionNumber = Int(row.value(0, "current_setting") ?? "") ?? connection.serverVersionNumber
        let values = row.rows.first ?? []
        func text(_ index: Int) -> String { index < values.count ? (values[index] ?? "") : "" }
        facts.versionNumber = Int(text(0)) ?? connection.serverVersionNumber
        facts.versionString = String(text(1).split(separator: " ").first ?? "")
        facts.database = text(2)
        facts.role = text(3)
        facts.privileges.superuser = text(4) == "t"
        facts.privileges.replication = text(5) == "t"
        facts.privileges.createOnDatabase = text(6) == "t"
        facts.privileges.createSubscription = text(7) == "t"
        facts.pluginFilesInstalled = text(8) == "t"

        let settings = try connection.query("""
            SELECT name, setting FROM pg_settings WHERE name = ANY($1::text[])
            """, [arrayLiteral(["wal_level", "max_replication_slots", "max_wal_senders", "max_logical_replication_workers",
                                "max_worker_processes", "track_commit_timestamp", "output_plugin_libraries",
                                "max_active_replication_origins"])])
        for row in settings.rows {
            if let name = row[0], let value = row[1] { facts.settings[name] = value }
        }

        let tables = try connection.query("""
            SELECT n.nspname, c.relname, c.relreplident::text, greatest(c.reltuples, 0)::bigint,
                   EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
                   pg_has_role(c.relowner, 'USAGE'),
                   (SELECT string_agg(ci.relname::text, ',' ORDER BY ci.relname) FROM pg_index i JOIN pg_class ci ON ci.oid = i.indexrelid
                    WHERE i.indrelid = c.oid AND i.indisunique AND NOT i.indisprimary)
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
              AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'
            """)
        for row in tables.rows {
            guard let schema = row[0], let name = row[1] else { continue }
            let qualified = QualifiedName(schema: schema, name: name)
            facts.tables[qualified] = TableFacts(name: qualified, columns: [], hasPrimaryKey: row[4] == "t",
                                                 replicaIdentity: row[2] ?? "d", isOwner: row[5] == "t",
                                                 rowEstimate: Int64(row[3] ?? "0") ?? 0)
            facts.tables[qualified]?.secondaryUniqueIndexes = (row[6] ?? "").split(separator: ",").map(String.init)
        }
    }

    private func columns(_ facts: inout NodeFacts, _ connection: PGConnection, tables: [QualifiedName]) throws {
        let present = tables.filter { facts.tables[$0] != nil }
        guard !present.isEmpty else { return }
        let result = try connection.query("""
            SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
                   pg_get_expr(d.adbin, d.adrelid), nullif(a.attidentity::text, ''),
                   coalesce(pg_get_serial_sequence(format('%I.%I', n.nspname, c.relname), a.attname),
                            substring(pg_get_expr(d.adbin, d.adrelid) from $$^nextval\\('(.+)'::regclass\\)$$))
            FROM pg_attribute a
            JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE a.attnum > 0 AND NOT a.attisdropped
              AND c.oid IN (SELECT to_regclass(x) FROM unnest($1::text[]) x)
            ORDER BY n.nspname, c.relname, a.attnum
            """, [arrayLiteral(present.map(\.sql))])
        var sequenceColumns: [(QualifiedName, String, String)] = []
        for row in result.rows {
            guard let schema = row[0], let table = row[1], let column = row[2], let type = row[3] else { continue }
            let name = QualifiedName(schema: schema, name: table)
            facts.tables[name]?.columns.append(ColumnFacts(name: column, type: type, defaultExpression: row[4], identity: row[5]))
            if let sequence = row[6] { sequenceColumns.append((name, column, sequence)) }
        }
        guard !sequenceColumns.isEmpty else { return }
        let sequences = try connection.query("""
            SELECT x, s.schemaname, s.sequencename, s.increment_by, s.start_value, s.last_value
            FROM unnest($1::text[]) x
            JOIN pg_sequences s ON to_regclass(x) = to_regclass(format('%I.%I', s.schemaname, s.sequencename))
            """, [arrayLiteral(sequenceColumns.map(\.2))])
        for (table, column, sequence) in sequenceColumns {
            guard let row = sequences.rows.first(where: { $0[0] == sequence }) else { continue }
            facts.tables[table]?.sequences.append(SequenceFacts(
                column: column, sequence: QualifiedName(schema: row[1] ?? "", name: row[2] ?? ""),
                increment: Int64(row[3] ?? "1") ?? 1, start: Int64(row[4] ?? "1") ?? 1, lastValue: row[5].flatMap { Int64($0) }))
        }
    }

    /// This mesh's objects on a node.
    func state(of facts: NodeFacts, _ connection: PGConnection, tables: [QualifiedName]) throws -> NodeState {
        try Catalog(connection, names: names).state(
            name: facts.name, versionNumber: facts.versionNumber,
            subscriptionColumns: Catalog.SubscriptionColumns(conninfo: facts.privileges.superuser, tables: true))
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
