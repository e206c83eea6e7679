/// The outcome of one preflight check.
public struct CheckResult: Sendable, Equatable, Codable {
    public enum Status: String, Sendable, Equatable, Codable, Comparable {
        case pass, warning, failure

        var rank: Int { self == .pass ? 0 : self == .warning ? 1 : 2 }
        public static func < (a: Status, b: Status) -> Bool { a.rank < b.rank }
    }

    /// nil for checks about the whole mesh.
    public var node: String?
    /// Short stable identifier: connection, version, wal_level, max_replication_slots, plugin, table, ...
    public var check: String
    public var status: Status
    public var message: String
    /// How to fix it: the exact setting or statement.
    public var fix: String?

    public init(node: String?, check: String, status: Status, message: String, fix: String? = nil) {
        self.node = node
        self.check = check
        self.status = status
        self.message = message
        self.fix = fix
    }
}

/// The preflight checks of `mmlite doctor` (and the blocking ones `apply`
/// runs before changing anything), judged from gathered facts.
public struct Checks: Sendable {
    public var config: MeshConfig
    public var facts: [NodeFacts]
    public var tables: [QualifiedName]
    public var unmatchedPatterns: [TablePattern]

    public init(config: MeshConfig, facts: [NodeFacts], tables: [QualifiedName], unmatchedPatterns: [TablePattern] = []) {
        self.config = config
        self.facts = facts
        self.tables = tables
        self.unmatchedPatterns = unmatchedPatterns
    }

    public func evaluate() -> [CheckResult] {
        var results: [CheckResult] = []
        let nodeCount = config.nodes.count
        if nodeCount < 2 {
            results.append(CheckResult(node: nil, check: "nodes", status: .warning,
                                       message: "the config lists \(nodeCount) node; a mesh needs at least two",
                                       fix: "add a [[nodes]] entry with name and dsn"))
        }
        for pattern in unmatchedPatterns {
            results.append(CheckResult(node: nil, check: "table", status: .failure,
                                       message: "mesh.tables entry \(pattern) matches no table on any node",
                                       fix: "create the tables first, or remove \(pattern) from mesh.tables"))
        }
        for node in config.nodes where DSN.hasPassword(node.effectivePeerDSN) {
            let field = node.peerDSN == nil ? "dsn (used as peer_dsn)" : "peer_dsn"
            results.append(CheckResult(node: node.name, check: "peer_dsn_password", status: .warning,
                                       message: "the \(field) of \(node.name) carries a password; it will be stored in pg_subscription on every other node, readable by their superusers",
                                       fix: "remove password= from \(field) and put the password in ~/.pgpass of the operating-system user that runs PostgreSQL on each other node (hostname:port:database:username:password, mode 0600)"))
        }
        for facts in self.facts {
            results += evaluate(facts)
            results += nativeApplyCheck(facts)
        }
        results += sequenceChecks()
        return results
    }

    /// Worst status of `results` (pass when empty).
    public static func worst(_ results: [CheckResult]) -> CheckResult.Status {
        results.map(\.status).max() ?? .pass
    }

    private var reachableFacts: [NodeFacts] { facts.filter(\.reachable) }

    /// The mesh as the facts show it (versions of the reachable nodes only).
    var view: MeshView { MeshView(config: config, facts: facts) }

    /// The filter each link gets; nil where a node's version is unknown.
    func linkFilter(publisher: String, subscriber: String) -> LinkFilter? {
        (try? view.filter(for: Link(publisher: publisher, subscriber: subscriber))) ?? nil
    }

    private func evaluate(_ node: NodeFacts) -> [CheckResult] {
        var results: [CheckResult] = []
        let name = node.name
        func pass(_ check: String, _ message: String) { results.append(CheckResult(node: name, check: check, status: .pass, message: message)) }
        func warn(_ check: String, _ message: String, _ fix: String?) { results.append(CheckResult(node: name, check: check, status: .warning, message: message, fix: fix)) }
        func fail(_ check: String, _ message: String, _ fix: String?) { results.append(CheckResult(node: name, check: check, status: .failure, message: message, fix: fix)) }

        let index = (config.nodes.firstIndex { $0.name == name } ?? 0) + 1
        guard node.reachable else {
            fail("connection", "cannot connect: \(node.connectionError ?? "unknown error")",
                 "check nodes[\(index)].dsn (host, port, dbname, user), that the server is running and that its pg_hba.conf lets this machine in; keep passwords in ~/.pgpass or PGPASSWORD, not in the config")
            return results
        }
        pass("connection", "connected to \(node.database) as \(node.role), PostgreSQL \(node.versionString)")

        let capabilities = node.capabilities
        if !capabilities.isSupported {
            let supported = ServerCapabilities.supportedMajors
            fail("version", "PostgreSQL \(node.versionString) is not supported (mmlite supports \(supported.lowerBound) to \(supported.upperBound))",
                 "upgrade the server to PostgreSQL 13 or later")
        }

        // wal_level
        let walLevel = node.settings["wal_level"] ?? "unknown"
        if walLevel == "logical" {
            pass("wal_level", "wal_level = logical")
        } else {
            fail("wal_level", "wal_level is \(walLevel); logical replication needs logical",
                 "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL (wal_level only changes at a restart, a reload is not enough)")
        }

        // Capacity for this mesh.
        let peers = max(config.nodes.count - 1, 0)
        func capacity(_ setting: String, needed: Int, why: String) {
            guard let text = node.settings[setting], let value = Int(text) else { return }
            if value >= needed {
                pass(setting, "\(setting) = \(value) (this mesh needs \(needed): \(why))")
            } else {
                fail(setting, "\(setting) = \(value) but this mesh needs at least \(needed) (\(why))",
                     "ALTER SYSTEM SET \(setting) = \(max(needed, 10)); then restart PostgreSQL (a reload is not enough)")
            }
        }
        capacity("max_replication_slots", needed: peers + node.otherSlots,
                 why: "\(peers) slot\(peers == 1 ? "" : "s") for the peers" + (node.otherSlots > 0 ? " + \(node.otherSlots) existing" : ""))
        if node.settings["max_active_replication_origins"] != nil {
            capacity("max_active_replication_origins", needed: peers + node.otherSubscriptions,
                     why: "one origin per subscription")
        } else if node.otherSubscriptions + peers > node.otherSlots + peers {
            capacity("max_replication_slots", needed: peers + node.otherSubscriptions,
                     why: "replication origins of the subscriptions also count against it")
        }
        capacity("max_wal_senders", needed: peers, why: "one sender per peer reading from this node")
        capacity("max_logical_replication_workers", needed: peers + node.otherSubscriptions,
                 why: "one apply worker per subscription")
        capacity("max_worker_processes", needed: peers + node.otherSubscriptions + 1,
                 why: "apply workers + the logical replication launcher")

        if let track = node.settings["track_commit_timestamp"] {
            if track == "on" {
                pass("track_commit_timestamp", "track_commit_timestamp = on")
            } else {
                warn("track_commit_timestamp", "track_commit_timestamp is off: the commit time of replicated changes is not kept (conflict handling will need it)",
                     "ALTER SYSTEM SET track_commit_timestamp = on; then restart PostgreSQL")
            }
        }

        // Privileges.
        let p = node.privileges
        if p.superuser {
            pass("privileges", "\(node.role) is a superuser")
        } else {
            var missing: [String] = []
            var fixes: [String] = []
            if !p.replication { missing.append("the REPLICATION attribute (to create slots)"); fixes.append("ALTER ROLE \(SQL.identifier(node.role)) REPLICATION;") }
            if !p.createOnDatabase { missing.append("CREATE on database \(node.database) (to create the publication)"); fixes.append("GRANT CREATE ON DATABASE \(SQL.identifier(node.database)) TO \(SQL.identifier(node.role));") }
            if !capabilities.nonSuperuserSubscriptions {
                missing.append("superuser (CREATE SUBSCRIPTION needs it before PostgreSQL 16)")
                fixes.append("ALTER ROLE \(SQL.identifier(node.role)) SUPERUSER;  -- or upgrade to 16+ and use pg_create_subscription")
            } else if !p.createSubscription {
                missing.append("membership in pg_create_subscription")
                fixes.append("GRANT pg_create_subscription TO \(SQL.identifier(node.role));")
            }
            let notOwned = tables.compactMap { node.tables[$0] }.filter { !$0.isOwner }.map(\.name)
            if !notOwned.isEmpty {
                missing.append("ownership of \(notOwned.map(\.sql).joined(separator: ", ")) (to publish them)")
                for table in notOwned { fixes.append("ALTER TABLE \(table.sql) OWNER TO \(SQL.identifier(node.role));  -- or GRANT the owner role to \(node.role)") }
            }
            if missing.isEmpty {
                pass("privileges", "\(node.role) has the privileges mmlite needs")
            } else {
                fail("privileges", "\(node.role) lacks " + missing.joined(separator: "; "), fixes.joined(separator: " "))
            }
        }

        // Output plugin, for the links this node publishes with it.
        let subscribersNeedingPlugin = config.nodes.map(\.name).filter { $0 != name && linkFilter(publisher: name, subscriber: $0) == .mmlite }
        if config.nodes.count > 1 && subscribersNeedingPlugin.isEmpty && capabilities.originNone && config.mesh.filter != .mmlite {
            pass("plugin", "every link from \(name) uses native origin = none (PostgreSQL 16+ on both ends); the mmlite plugin is not needed here")
        } else if !subscribersNeedingPlugin.isEmpty {
            results += pluginCheck(node, for: subscribersNeedingPlugin)
        }

        // Tables.
        for table in tables {
            guard let mine = node.tables[table] else {
                let source = reachableFacts.first { $0.tables[table] != nil }
                fail("table", "table \(table.sql) does not exist on \(name)",
                     "create it with the same definition as on \(source?.name ?? "the other nodes")" + (source.map { " (pg_dump --schema-only --table=\(shellQuote(table.sql)) \(shellQuote(config.node(named: $0.name).map { DSN.masked($0.dsn) } ?? "")) | psql ...)" } ?? ""))
                continue
            }
            var problems: [String] = []
            var fixes: [String] = []
            if let reference = reachableFacts.first(where: { $0.name != name && $0.tables[table] != nil }),
               let theirs = reference.tables[table] {
                let ours = Dictionary(mine.columns.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
                let others = Dictionary(theirs.columns.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
                for column in theirs.columns where ours[column.name] == nil {
                    problems.append("column \(SQL.identifier(column.name)) (\(column.type)) is missing")
                    fixes.append("ALTER TABLE \(table.sql) ADD COLUMN \(SQL.identifier(column.name)) \(column.type);")
                }
                for column in mine.columns where others[column.name] == nil {
                    problems.append("column \(SQL.identifier(column.name)) exists only here, not on \(reference.name)")
                    fixes.append("ALTER TABLE \(table.sql) ADD COLUMN \(SQL.identifier(column.name)) \(column.type); on \(reference.name) (or drop it here)")
                }
                for column in mine.columns {
                    if let other = others[column.name], other.type != column.type {
                        problems.append("column \(SQL.identifier(column.name)) is \(column.type) here but \(other.type) on \(reference.name)")
                        fixes.append("ALTER TABLE \(table.sql) ALTER COLUMN \(SQL.identifier(column.name)) TYPE \(other.type);")
                    }
                }
                if !problems.isEmpty {
                    problems[0] = "differs from \(reference.name): " + problems[0]
                }
            }
            if !mine.hasReplicaIdentity {
                problems.append(mine.replicaIdentity == "n"
                    ? "has REPLICA IDENTITY NOTHING: its UPDATEs and DELETEs cannot be replicated"
                    : "has no primary key: once published, its UPDATEs and DELETEs fail (no replica identity)")
                fixes.append("ALTER TABLE \(table.sql) ADD PRIMARY KEY (<key columns>);  -- or, slower: ALTER TABLE \(table.sql) REPLICA IDENTITY FULL;")
            }
            if problems.isEmpty {
                if mine.replicaIdentity == "f" && !mine.hasPrimaryKey {
                    warn("table", "\(table.sql) uses REPLICA IDENTITY FULL without a primary key: every replicated UPDATE/DELETE scans the table",
                         "ALTER TABLE \(table.sql) ADD PRIMARY KEY (<key columns>);")
                } else {
                    pass("table", "\(table.sql): \(mine.columns.count) columns, " + (mine.hasPrimaryKey ? "primary key" : "replica identity \(mine.replicaIdentity)"))
                }
            } else {
                fail("table", "\(table.sql) " + problems.joined(separator: "; "), fixes.joined(separator: " "))
            }
            // Last-update-wins decides per primary key; a second unique key
            // can still collide between nodes and stop the link.
            if config.tableSettings[table]?.conflicts != nil, !mine.secondaryUniqueIndexes.isEmpty {
                warn("unique_key", "\(table.sql) opts in to conflict handling but has unique \(mine.secondaryUniqueIndexes.count == 1 ? "index" : "indexes") besides the primary key (\(mine.secondaryUniqueIndexes.joined(separator: ", "))): two nodes writing the same value under different keys stop replication, which last-update-wins cannot resolve",
                     "give each node its own values (or drop the constraint); when a link stops on it: mmlite resolve <node> --skip (records the skipped change in mmlite.conflicts)")
            }
        }

        // peer_dsn database.
        if let own = config.node(named: name), let peerDatabase = DSN.value("dbname", in: own.effectivePeerDSN),
           !DSN.looksLikeConninfo(peerDatabase), !node.database.isEmpty, peerDatabase != node.database {
            fail("peer_dsn", "the peer_dsn of \(name) names database \(peerDatabase) but mmlite works in \(node.database) (slots and publications belong to one database)",
                 "set dbname=\(node.database) in nodes[\(index)].peer_dsn")
        }

        // Reaching the peers, from this node's server.
        for peer in config.nodes where peer.name != name {
            switch node.peerProbes[peer.name] ?? .notRun {
            case .notRun:
                break
            case .ok:
                pass("peer", "\(name) reaches \(peer.name) with its peer_dsn")
            case .skipped(let why):
                warn("peer", "could not test whether \(name) reaches \(peer.name): \(why)", nil)
            case .failed(_, let why):
                let peerIndex = (config.nodes.firstIndex { $0.name == peer.name } ?? 0) + 1
                fail("peer", "\(name) cannot reach \(peer.name) with its peer_dsn (\(DSN.masked(peer.effectivePeerDSN))): \(why)",
                     "make nodes[\(peerIndex)].peer_dsn work from \(name)'s server: the host and port reachable from there, \(peer.name)'s pg_hba.conf allowing \(name) (host \(DSN.value("dbname", in: peer.effectivePeerDSN) ?? "<db>") \(DSN.value("user", in: peer.effectivePeerDSN) ?? "<user>") <\(name)'s address>/32 scram-sha-256), and the password in ~/.pgpass of the user running PostgreSQL on \(name)")
            }
        }
        return results
    }

    private func pluginCheck(_ node: NodeFacts, for subscribers: [String]) -> [CheckResult] {
        let name = node.name
        let why = "links to \(subscribers.joined(separator: ", ")) need it (PostgreSQL \(node.major) " + (node.capabilities.originNone ? "with a peer before 16" : "has no origin = none") + ")"
        let installFix = "install the plugin on \(name)'s server: make install PG_CONFIG=/usr/lib/postgresql/\(node.major)/bin/pg_config (the pg_config of that server), run from the mmlite source tree"
        let allowedLine = Self.outputPluginLibrariesLine(current: node.settings["output_plugin_libraries"])
        let allowFix = "add to postgresql.conf on \(name): \(allowedLine)  (or: \(Self.outputPluginLibrariesAlterSystem(current: node.settings["output_plugin_libraries"]))) then reload: SELECT pg_reload_conf(); — a reload is enough, no restart"
        func result(_ status: CheckResult.Status, _ message: String, _ fix: String?) -> [CheckResult] {
            [CheckResult(node: name, check: "plugin", status: status, message: message, fix: fix)]
        }
        switch node.pluginProbe {
        case .ok:
            return result(.pass, "the mmlite output plugin loads" + (node.settings["output_plugin_libraries"] != nil ? " and output_plugin_libraries allows it" : "") + " (\(why))", nil)
        case .failed(let sqlState, let text):
            switch PluginFailure(sqlState: sqlState, allowListExists: node.settings["output_plugin_libraries"] != nil) {
            case .notAllowed:
                return result(.failure, "output_plugin_libraries does not allow the mmlite plugin (\(why)): \(text)", allowFix)
            case .notInstalled:
                return result(.failure, "the mmlite output plugin is not installed on \(name) (\(why)): \(text)", installFix)
            case .broken:
                return result(.failure, "the mmlite output plugin does not work on \(name) (\(why)): \(text)", installFix)
            }
        case .notRun, .skipped:
            if let allowed = node.settings["output_plugin_libraries"], !Self.libraries(allowed).contains("mmlite") {
                return result(.failure, "output_plugin_libraries = '\(allowed)' does not allow the mmlite plugin (\(why))", allowFix)
            }
            if node.pluginFilesInstalled == false {
                return result(.failure, "the mmlite plugin is not installed on \(name) (\(why))", installFix)
            }
            if case .skipped(let reason) = node.pluginProbe {
                return result(.warning, "could not test the mmlite plugin on \(name): \(reason)", nil)
            }
            return []
        }
    }

    /// Which apply trigger opted-in tables will get on this node (both are
    /// correct; native is faster), from the probe that creates its C function.
    private func nativeApplyCheck(_ node: NodeFacts) -> [CheckResult] {
        func result(_ message: String) -> [CheckResult] {
            [CheckResult(node: node.name, check: "conflict_apply", status: .pass, message: message)]
        }
        let sql = "opted-in tables will apply arriving changes with the SQL trigger (portable, slower): "
        switch node.nativeApplyProbe {
        case .notRun:
            return []
        case .ok:
            return result("opted-in tables will apply arriving changes with the native trigger (mmlite.apply_change in mmlite.so)")
        case .skipped(let why):
            return result(sql + "could not test the native one: \(why)")
        case .failed(let state, let message):
            switch state {
            case .insufficientPrivilege?: return result(sql + "\(node.role) may not create C functions (only a superuser may)")
            case .undefinedFile?: return result(sql + "mmlite.so is not installed on this server")
            case .undefinedFunction?: return result(sql + "this server's mmlite.so has no native apply (an older build)")
            default: return result(sql + "creating mmlite.apply_change() failed: \(message)")
            }
        }
    }

    static func libraries(_ value: String) -> [String] {
        value.split(separator: ",").map { $0.trimming(" \t\"") }.filter { !$0.isEmpty }
    }

    /// The value of output_plugin_libraries with mmlite added.
    public static func outputPluginLibrariesValue(current: String?) -> String {
        var list = current.map(libraries) ?? ["pgoutput", "test_decoding"]
        if list.isEmpty { list = ["pgoutput", "test_decoding"] }
        if !list.contains("mmlite") { list.append("mmlite") }
        return list.joined(separator: ", ")
    }

    /// The same as ALTER SYSTEM: a list setting takes one literal per element
    /// (one literal holding the whole list would be read as a single name).
    public static func outputPluginLibrariesAlterSystem(current: String?) -> String {
        let items = outputPluginLibrariesValue(current: current).split(separator: ",").map { "'\($0.trimming(" "))'" }
        return "ALTER SYSTEM SET output_plugin_libraries = \(items.joined(separator: ", "));"
    }

    /// The exact postgresql.conf line that allows the plugin.
    public static func outputPluginLibrariesLine(current: String?) -> String {
        "output_plugin_libraries = '\(outputPluginLibrariesValue(current: current))'"
    }

    /// Columns fed by sequences collide when every node hands out the same values.
    private func sequenceChecks() -> [CheckResult] {
        let nodes = reachableFacts
        guard nodes.count > 1 else { return [] }
        var results: [CheckResult] = []
        for table in tables {
            var columns: [String] = []
            for facts in nodes { for sequence in facts.tables[table]?.sequences ?? [] where !columns.contains(sequence.column) { columns.append(sequence.column) } }
            for column in columns {
                let perNode: [(NodeFacts, SequenceFacts)] = nodes.compactMap { facts in
                    facts.tables[table]?.sequences.first { $0.column == column }.map { (facts, $0) }
                }
                let step = Int64(config.nodes.count)
                let distinct = perNode.count == nodes.count
                    && perNode.allSatisfy { $0.1.increment >= step && $0.1.increment == perNode[0].1.increment }
                    && Set(perNode.map { (($0.1.start % $0.1.increment) + $0.1.increment) % $0.1.increment }).count == perNode.count
                let label = "\(table.sql).\(SQL.identifier(column))"
                if distinct {
                    results.append(CheckResult(node: nil, check: "sequence", status: .pass,
                                               message: "\(label): each node's sequence hands out distinct values (increment \(perNode[0].1.increment))"))
                    continue
                }
                let increment: Int64 = max(100, step)
                let highest = perNode.map { max($0.1.lastValue ?? $0.1.start, $0.1.start) }.max() ?? 0
                let base = ((highest / increment) + 1) * increment
                var fixes: [String] = []
                for (offset, pair) in perNode.enumerated() {
                    fixes.append("on \(pair.0.name): ALTER SEQUENCE \(pair.1.sequence.sql) INCREMENT BY \(increment) RESTART WITH \(base + Int64(offset) + 1);")
                }
                results.append(CheckResult(node: nil, check: "sequence", status: .warning,
                                           message: "\(label) takes values from a sequence that hands out the same numbers on every node: inserts on two nodes will collide if it is a key",
                                           fix: "use uuid keys (DEFAULT gen_random_uuid()), or give each node its own values: " + fixes.joined(separator: " ")))
            }
        }
        return results
    }
}

func shellQuote(_ text: String) -> String {
    if text.allSatisfy({ $0.isLetter || $0.isNumber || "._-/=:".contains($0) }) { return text }
    return "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'"
}

extension StringProtocol {
    func trimming(_ set: String) -> String {
        var scalars = Substring(String(self))
        while let first = scalars.first, set.contains(first) { scalars = scalars.dropFirst() }
        while let last = scalars.last, set.contains(last) { scalars = scalars.dropLast() }
        return String(scalars)
    }
}
