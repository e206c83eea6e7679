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
    public var purpose: Purpose

    /// What the checks are run for: rights a command does not need are not its failures.
    public enum Purpose: Sendable, Equatable {
        /// Everything: join rights fail on nodes that still have to join, warn on members.
        case doctor
        /// Only what apply needs.
        case apply
        /// Apply's needs, and join's rights on the joining node and its source.
        case join(node: String, source: String)
    }

    public init(config: MeshConfig, facts: [NodeFacts], tables: [QualifiedName], unmatchedPatterns: [TablePattern] = [],
                purpose: Purpose = .doctor) {
        self.config = config
        self.facts = facts
        self.tables = tables
        self.unmatchedPatterns = unmatchedPatterns
        self.purpose = purpose
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
            let subscribers = self.facts.filter { $0.name != node.name }
            if !subscribers.isEmpty, subscribers.allSatisfy(\.subscriptionsNeedPassword) {
                // Required, so advice rather than a warning: keep what it unlocks small.
                results.append(CheckResult(node: node.name, check: "peer_dsn_password", status: .pass,
                                           message: "the \(field) of \(node.name) carries a password, as PostgreSQL 16+ requires of subscriptions owned by a non-superuser; it is stored in pg_subscription on every other node (readable by superusers only). Advice: let it name a role with only LOGIN and REPLICATION, and use sslmode=verify-full across machines"))
                continue
            }
            results.append(CheckResult(node: node.name, check: "peer_dsn_password", status: .warning,
                                       message: "the \(field) of \(node.name) carries a password; it will be stored in pg_subscription on every other node, readable by their superusers",
                                       fix: "remove password= from \(field) and put the password in ~/.pgpass of the operating-system user that runs PostgreSQL on each other node (hostname:port:database:username:password, mode 0600)"))
        }
        for facts in self.facts {
            results += evaluate(facts)
            results += nativeApplyCheck(facts)
            results += conflictHandlingChecks(facts)
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
        if node.connectionError == nil, let read = node.readError {
            fail("connection", "connected as \(node.role.isEmpty ? "the role in the dsn" : node.role), but reading the node's state failed: \(read.message)",
                 read.missingPrivilege
                    ? "give the role in nodes[\(index)].dsn the rights mmlite reads with (docs/security.md, \"Two roles\"; for a role that only runs status: \"A role for status and monitoring\"), or name the admin role there"
                    : "run `mmlite doctor` again; if it persists, look in the server's log for this error")
            return results
        }
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

        // mmlite ddl commits a migration on every node with PREPARE TRANSACTION.
        if let prepared = node.settings["max_prepared_transactions"].flatMap(Int.init) {
            if prepared > 0 {
                pass("max_prepared_transactions", "max_prepared_transactions = \(prepared) (mmlite ddl prepares one transaction per migration)")
            } else {
                warn("max_prepared_transactions", "max_prepared_transactions = 0: mmlite ddl (schema changes on every node at once) cannot run",
                     "ALTER SYSTEM SET max_prepared_transactions = 10; then restart PostgreSQL (a reload is not enough)")
            }
        }

        if let track = node.settings["track_commit_timestamp"] {
            if track == "on" {
                pass("track_commit_timestamp", "track_commit_timestamp = on")
            } else {
                warn("track_commit_timestamp", "track_commit_timestamp is off: the commit time of replicated changes is not kept (conflict handling will need it)",
                     "ALTER SYSTEM SET track_commit_timestamp = on; then restart PostgreSQL")
            }
        }

        results += privilegeChecks(node)
        results += peerRightsChecks(node)

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
                (problems, fixes) = Self.tableDifferences(table, mine: mine, node: name, reference: reference.name, theirs: theirs)
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
            if let settings = config.tableSettings[table], let policy = settings.conflicts, !settings.deltaColumns.isEmpty {
                let columns = mine.columns.map { ConflictSQL.Column(name: $0.name, type: $0.type, keyPosition: $0.keyPosition, identityAlways: $0.identity == "a") }
                let described = ConflictSQL.Table(name: table, columns: columns, policy: policy, deltaColumns: settings.deltaColumns)
                do {
                    try ConflictSQL.validateDeltas(described)
                    pass("delta_columns", "\(table.sql): " + described.deltas.map { "\($0.name) (\($0.type))" }.joined(separator: ", ")
                         + " add up on every node; other columns: last update wins")
                } catch {
                    fail("delta_columns", "\(error)", "list in delta_columns only columns of \(table.sql) of type smallint, integer, bigint or numeric, outside its primary key (docs/conflicts.md, \"Delta columns\")")
                }
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
            case .failed(let state, _) where state == .undefinedTable || state == .invalidSchemaName:
                // The peer answered; its publication lists tables not here yet (join creates them, the table checks say so).
                pass("peer", "\(name) reaches \(peer.name) with its peer_dsn (not every table \(peer.name) publishes exists here yet)")
            case .failed where peerLacksReplication(peer.name):
                break  // the peer_role (or that node's privileges) check names the fix: ALTER ROLE ... REPLICATION
            case .failed(.prohibitedSQLStatementAttempted?, _) where node.subscriptionsNeedPassword && !DSN.hasPassword(peer.effectivePeerDSN):
                break  // no password in the peer_dsn: the peer_password check says so
            case .failed(.prohibitedSQLStatementAttempted?, let why) where node.subscriptionsNeedPassword && DSN.hasPassword(peer.effectivePeerDSN):
                fail("peer", "\(peer.name)'s server let \(name) in without asking for a password, and PostgreSQL 16+ refuses that for a subscription owned by \(node.role) (not a superuser): \(why)",
                     "in \(peer.name)'s pg_hba.conf, authenticate \(name)'s connections with scram-sha-256 (not trust or peer): host \(DSN.value("dbname", in: peer.effectivePeerDSN) ?? "<db>") \(DSN.value("user", in: peer.effectivePeerDSN) ?? "<user>") <\(name)'s address>/32 scram-sha-256, then SELECT pg_reload_conf();")
            case .failed(_, let why):
                let peerIndex = (config.nodes.firstIndex { $0.name == peer.name } ?? 0) + 1
                fail("peer", "\(name) cannot reach \(peer.name) with its peer_dsn (\(DSN.masked(peer.effectivePeerDSN))): \(why)",
                     "make nodes[\(peerIndex)].peer_dsn work from \(name)'s server: the host and port reachable from there, \(peer.name)'s pg_hba.conf allowing \(name) (host \(DSN.value("dbname", in: peer.effectivePeerDSN) ?? "<db>") \(DSN.value("user", in: peer.effectivePeerDSN) ?? "<user>") <\(name)'s address>/32 scram-sha-256), and the password in ~/.pgpass of the user running PostgreSQL on \(name)")
            }
        }
        return results
    }

    /// On a member, doctor only: whether each opted-in table's installed
    /// conflict handling still matches its columns (`ConflictDrift`, as
    /// status judges it). Not for apply, which reinstalls it.
    private func conflictHandlingChecks(_ node: NodeFacts) -> [CheckResult] {
        guard purpose == .doctor, node.reachable, let objects = node.conflictObjects, view.members.contains(node.name) else { return [] }
        let problems = MeshDrift.conflictProblems(config: config, tables: tables, node: node.name, facts: objects)
        let optedIn = tables.filter { config.tableSettings[$0]?.conflicts != nil && objects.columns[$0] != nil }
        var results = problems.map { problem in
            CheckResult(node: node.name, check: "conflict_handling", status: problem.health == .critical ? .failure : .warning,
                        message: problem.message, fix: problem.fix)
        }
        for table in optedIn where !problems.contains(where: { $0.table == table }) {
            results.append(CheckResult(node: node.name, check: "conflict_handling", status: .pass,
                                       message: "\(table.sql): conflict handling matches its columns"))
        }
        return results
    }

    /// How `mine` differs from the same table on `reference` (`SchemaDrift`,
    /// told from `node`'s side): problems and their fixes; missing columns
    /// first, then extra ones, types, the primary key.
    static func tableDifferences(_ table: QualifiedName, mine: TableFacts, node: String, reference: String, theirs: TableFacts) -> ([String], [String]) {
        let drift = SchemaDrift.compare(table, shapes: [(reference, theirs.shape), (node, mine.shape)])
        var missing: [(String, String)] = [], extra: [(String, String)] = [], other: [(String, String)] = []
        for difference in drift.differences {
            switch difference {
            case .table:
                break
            case .column(let column, let type, let present, _):
                let add = "ALTER TABLE \(table.sql) ADD COLUMN \(SQL.identifier(column)) \(type);"
                if present.contains(node) {
                    extra.append(("column \(SQL.identifier(column)) exists only here, not on \(reference)", "\(add) on \(reference) (or drop it here)"))
                } else {
                    missing.append(("column \(SQL.identifier(column)) (\(type)) is missing", add))
                }
            case .type(let column, let forms):
                let ours = forms.first { $0.nodes.contains(node) }?.value ?? "?"
                let others = forms.first { $0.nodes.contains(reference) }?.value ?? "?"
                other.append(("column \(SQL.identifier(column)) is \(ours) here but \(others) on \(reference)",
                              "ALTER TABLE \(table.sql) ALTER COLUMN \(SQL.identifier(column)) TYPE \(others);"))
            case .primaryKey(let forms):
                func key(_ columns: [String]?) -> String { columns.map { $0.isEmpty ? "none" : "(" + $0.map(SQL.identifier).joined(separator: ", ") + ")" } ?? "?" }
                let others = forms.first { $0.nodes.contains(reference) }?.value
                other.append(("primary key is \(key(forms.first { $0.nodes.contains(node) }?.value)) here but \(key(others)) on \(reference)",
                              "give \(table.sql) the same primary key on every node" + (others.map { $0.isEmpty ? "" : ": ADD PRIMARY KEY (\($0.map(SQL.identifier).joined(separator: ", ")))" } ?? "")))
            }
        }
        let all = missing + extra + other
        var problems = all.map(\.0)
        if !problems.isEmpty { problems[0] = "differs from \(reference): " + problems[0] }
        return (problems, all.map(\.1))
    }

    /// What the node's role lacks for apply, and for join where this node is
    /// to be joined or copied from. Each missing right names its GRANT.
    private func privilegeChecks(_ node: NodeFacts) -> [CheckResult] {
        let name = node.name
        guard !node.privileges.superuser else {
            return [CheckResult(node: name, check: "privileges", status: .pass, message: "\(node.role) is a superuser")]
        }
        func result(_ check: String, _ status: CheckResult.Status, _ missing: [RequiredRight], lacking: String, passed: String) -> CheckResult {
            guard !missing.isEmpty else { return CheckResult(node: name, check: check, status: .pass, message: passed) }
            let grants = missing.map { $0.grant(role: node.role, database: node.database) }
            return CheckResult(node: name, check: check, status: status,
                               message: "\(node.role) lacks " + missing.map(\.purpose).joined(separator: "; ") + lacking,
                               fix: "as a superuser (or the service's admin role) on \(name)" + (missing.contains { if case .execute = $0 { return true } else { return false } } ? ", in database \(node.database)" : "") + ": " + grants.joined(separator: " "))
        }
        var results = [result("privileges", .failure, RequiredRights.missing(RequiredRights.apply(node.capabilities, tables: tables), in: node),
                              lacking: "", passed: "\(node.role) (not a superuser) has the privileges apply needs")]
        let capabilities = node.capabilities
        switch purpose {
        case .apply:
            break
        case .join(let joining, let source):
            var rights: [RequiredRight] = []
            if name == joining { rights += RequiredRights.joinTarget(capabilities) }
            if name == source { rights += RequiredRights.joinSource(capabilities) }
            if !rights.isEmpty {
                results.append(result("join_privileges", .failure, RequiredRights.missing(RequiredRights.merged(rights), in: node),
                                      lacking: " (join \(name == joining ? "into" : "from") \(name))", passed: "\(node.role) has the privileges join needs here"))
            }
        case .doctor:
            let rights = RequiredRights.merged(RequiredRights.joinTarget(capabilities) + RequiredRights.joinSource(capabilities))
            // Has to join: no publication here while another node has one
            // (also a one-node mesh, which grows only by join).
            let joins = node.state?.publication == nil && facts.contains { $0.name != name && $0.state?.publication != nil }
            results.append(result("join_privileges", joins ? .failure : .warning, RequiredRights.missing(rights, in: node),
                                  lacking: joins ? " (\(name) has still to join: mmlite join \(name) --from <member>)" : " (mmlite join needs them on the node that joins and on the member it copies from)",
                                  passed: "\(node.role) has the privileges join needs"))
        }
        return results
    }

    /// Whether the role `publisher`'s peer_dsn names may not stream (no REPLICATION, not a superuser).
    private func peerLacksReplication(_ publisher: String) -> Bool {
        guard let role = facts.first(where: { $0.name == publisher })?.peerRole, role.exists else { return false }
        return !role.superuser && !role.replication
    }

    /// The publisher side of every link from this node: the role peers
    /// connect as; the subscriber side: a password where 16+ requires one.
    private func peerRightsChecks(_ node: NodeFacts) -> [CheckResult] {
        let name = node.name
        guard config.nodes.count > 1 else { return [] }
        var results: [CheckResult] = []
        let index = (config.nodes.firstIndex { $0.name == name } ?? 0) + 1
        if let role = node.peerRole {
            let quoted = SQL.identifier(role.name)
            var missing: [String] = []
            var fixes: [String] = []
            if !role.exists {
                missing.append("does not exist")
                fixes.append("CREATE ROLE \(quoted) LOGIN REPLICATION PASSWORD '<password>';")
            } else if !role.superuser {
                if !role.canLogin { missing.append("may not log in"); fixes.append("ALTER ROLE \(quoted) LOGIN;") }
                // The node's own role: its missing REPLICATION is the privileges check's.
                if !role.replication && role.name != node.role {
                    missing.append("lacks the REPLICATION attribute (peers stream from \(name) as it)")
                    fixes.append("ALTER ROLE \(quoted) REPLICATION;")
                }
            }
            if missing.isEmpty {
                results.append(CheckResult(node: name, check: "peer_role", status: .pass,
                                           message: "peers connect to \(name) as \(role.name)" + (role.superuser ? " (a superuser)" : role.replication ? ", which has REPLICATION" : " (REPLICATION: see privileges)")))
            } else {
                results.append(CheckResult(node: name, check: "peer_role", status: .failure,
                                           message: "nodes[\(index)].peer_dsn connects as \(role.name), which " + missing.joined(separator: "; "),
                                           fix: "as a superuser (or the service's admin role) on \(name): " + fixes.joined(separator: " ")))
            }
        }
        guard node.subscriptionsNeedPassword else { return results }
        for peer in config.nodes where peer.name != name && !DSN.hasPassword(peer.effectivePeerDSN) {
            let peerIndex = (config.nodes.firstIndex { $0.name == peer.name } ?? 0) + 1
            let field = peer.peerDSN == nil ? "dsn (used as peer_dsn)" : "peer_dsn"
            results.append(CheckResult(node: name, check: "peer_password", status: .failure,
                                       message: "\(name)'s subscription to \(peer.name) will be owned by \(node.role), not a superuser: PostgreSQL 16+ then requires a password in its connection string (password_required; ~/.pgpass is not used for it), and the \(field) of \(peer.name) has none",
                                       fix: "add password=<password of \(DSN.value("user", in: peer.effectivePeerDSN) ?? "its user")> to nodes[\(peerIndex)].peer_dsn (\(peer.name)'s pg_hba.conf must ask for it: scram-sha-256)"))
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

    /// Columns fed by sequences collide when every node hands out the same
    /// values: under node-offset apply prevents it (what it cannot convert
    /// fails here); under none a colliding key fails (docs/sequences.md).
    private func sequenceChecks() -> [CheckResult] {
        var states: [String: NodeState] = [:]
        for facts in reachableFacts { states[facts.name] = facts.state }
        let members = view.members.filter { states[$0] != nil }
        guard !members.isEmpty else { return [] }
        switch config.mesh.sequences {
        case .none: return members.count > 1 ? collidingSequences(states, members: members) : []
        case .nodeOffset: return nodeOffsetChecks(states, members: members)
        }
    }

    private func nodeOffsetChecks(_ states: [String: NodeState], members: [String]) -> [CheckResult] {
        let planner = SequencePlanner(config: config)
        let step = config.mesh.sequenceStep
        let entries: [SequenceOffset]
        do { entries = try planner.assign(members, recorded: try SequencePlanner.recorded(states)) } catch {
            return [CheckResult(node: nil, check: "sequence_offsets", status: .failure, message: "\(error)",
                                fix: "see docs/sequences.md, \"Offsets\"")]
        }
        var results: [CheckResult] = []
        for node in members {
            guard let offset = SequencePlanner.offset(of: node, in: entries), let sequences = states[node]?.sequences, !sequences.isEmpty else { continue }
            var converting: [String] = []
            for (sequence, conversion) in planner.conversions(node: node, offset: offset, states: states, nodes: members) {
                switch conversion {
                case .convert(let restart, _): converting.append("\(sequence.sequence.sql) from \(restart)")
                case .refused(let problem): results.append(CheckResult(node: node, check: "sequence", status: .failure, message: problem.message, fix: problem.fix))
                }
            }
            let names = Set(sequences.map(\.sequence)).count
            results.append(CheckResult(node: node, check: "sequence", status: .pass, message: converting.isEmpty
                ? "\(names) sequence\(names == 1 ? "" : "s") of mesh tables draw\(names == 1 ? "s" : "") from offset \(offset) of \(step)"
                : "apply makes \(converting.joined(separator: ", ")) draw from offset \(offset) of \(step) (INCREMENT BY \(step))"))
            results += capacityWarnings(node: node, sequences: sequences, step: step)
        }
        return results
    }

    /// A 2- or 4-byte column runs out `step` times sooner: say after how many more rows.
    private func capacityWarnings(node: String, sequences: [MeshSequence], step: Int) -> [CheckResult] {
        sequences.filter { $0.limit <= Int64(Int32.max) && $0.increment >= 0 }.map { sequence in
            let left = max(0, sequence.limit - sequence.highest)
            return CheckResult(node: node, check: "sequence_capacity", status: .warning,
                               message: "\(sequence.label) is \(sequence.columnType) (at most \(sequence.limit)): at \(sequence.highest), with sequence_step = \(step) this node can insert about \(left / Int64(step)) more rows (\(left) without the step)",
                               fix: "widen it to bigint through mmlite ddl: ALTER TABLE \(sequence.table.sql) ALTER COLUMN \(SQL.identifier(sequence.column)) TYPE bigint; ALTER SEQUENCE \(sequence.sequence.sql) AS bigint")
        }
    }

    /// Under `sequences = "none"`: a column whose sequences hand out the same values on two members.
    private func collidingSequences(_ states: [String: NodeState], members: [String]) -> [CheckResult] {
        var results: [CheckResult] = []
        var labels: [String] = []
        for node in members { for sequence in states[node]?.sequences ?? [] where !labels.contains(sequence.label) { labels.append(sequence.label) } }
        for label in labels {
            let perNode: [(String, MeshSequence)] = members.compactMap { node in states[node]?.sequences.first { $0.label == label }.map { (node, $0) } }
            guard let first = perNode.first?.1 else { continue }
            let distinct = perNode.count == members.count && first.increment >= Int64(members.count)
                && perNode.allSatisfy { $0.1.increment == first.increment }
                && Set(perNode.map { residue($0.1.start, first.increment) }).count == perNode.count
            if distinct {
                results.append(CheckResult(node: nil, check: "sequence", status: .pass,
                                           message: "\(label): each node's sequence hands out its own values (increment \(first.increment))"))
                continue
            }
            results.append(CheckResult(node: nil, check: "sequence", status: first.isKey ? .failure : .warning,
                                       message: "\(label) takes values from \(first.sequence.sql), which hands out the same numbers on every node: "
                                           + (first.isKey ? "inserts on two nodes collide on the primary key and stop replication" : "rows inserted on two nodes get equal values"),
                                       fix: "set sequences = \"node-offset\" in [mesh] (then mmlite apply gives each node its own values; docs/sequences.md), or use uuid keys (DEFAULT gen_random_uuid()) or mmlite.time_ordered_id()"))
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
