import Foundation
import MMLiteCore
import PostgresClient

struct NodeStatus {
    var name: String
    var dsn: String
    var reachable: Bool
    /// Connected, but a read failed (a right the role lacks, say): its state is unknown.
    var unreadable = false
    var error: String?
    var version: String?
    var currentLSN: LSN?
    /// mmlite.conflicts rows and size (nil: no conflict log on this node).
    var conflictLogRows: Int64?
    var conflictLogBytes: Int64?
    /// Change and version tables of opted-in tables: count, total size, estimated rows.
    var changeTables = 0, changeBytes: Int64 = 0, changeRows: Int64 = 0
    var versionTables = 0, versionBytes: Int64 = 0, versionRows: Int64 = 0
    /// Change tables applied by the native (C) trigger; the others apply with SQL.
    var nativeApplyTables = 0
    var applyInstaller: (role: String, superuser: Bool)?
    var pluginInstalled: Bool?
    /// An interrupted `mmlite ddl`: its prepared transactions and fenced tables here.
    var openMigrations: [String] = []
    var fencedTables: [QualifiedName] = []
    /// This node's sequence offset and the mesh tables' sequences (docs/sequences.md).
    var sequenceOffset: Int?
    var sequences: [MeshSequence] = []

    /// Why opted-in tables apply with SQL here (nil: all native, or none opted in).
    func sqlApplyReason(_ configured: ConflictApply) -> String? {
        ConflictMaintenance.sqlApplyReason(nativeTables: nativeApplyTables, changeTables: changeTables, configured: configured,
                                           installer: applyInstaller, pluginInstalled: pluginInstalled)
    }
}

struct Status {
    let configPath: String
    let format: OutputFormat
    let check: Bool
    let thresholds: Thresholds
    let context: Context
    /// WAL a slot may retain before status warns (a subscriber gone for good: `part --force`).
    var retainedWarningBytes: UInt64 = 1 << 30

    func run() throws -> ExitStatus {
        let console = context.console
        let config = try loadConfig(configPath, console: console)
        let connections = Connections(config: config, console: console)
        // Observe.
        var nodes: [NodeStatus] = []
        var states: [String: NodeState] = [:]
        for node in config.nodes {
            let (status, state) = observe(node, connections: connections)
            nodes.append(status)
            states[node.name] = state
        }
        // Decide.
        let view = MeshView(config: config, states: states)
        let links = assess(view, nodes: nodes, connections: connections)
        let drift = self.drift(view, nodes: nodes, connections: connections)
            + SequencePlanner(config: config).problems(states: states, members: view.members)
        var overall = (links.map(\.health) + drift.map(\.health)).max() ?? .ok
        if nodes.contains(where: { !$0.reachable }) { overall = max(overall, .critical) }
        if nodes.contains(where: { !$0.openMigrations.isEmpty || !$0.fencedTables.isEmpty }) { overall = max(overall, .critical) }
        // Print.
        switch format {
        case .json:
            console.print(renderJSON(config: config, nodes: nodes, links: links, drift: drift, overall: overall).render())
        case .table:
            renderTable(config: config, nodes: nodes, links: links, drift: drift, overall: overall, console: console)
        }
        if check { return ExitStatus(rawValue: overall.nagiosCode) ?? .unknown }
        return .ok
    }

    /// One node's status line and this mesh's objects on it (nil: it did not answer).
    func observe(_ node: NodeConfig, connections: Connections) -> (NodeStatus, NodeState?) {
        var status = NodeStatus(name: node.name, dsn: DSN.masked(node.dsn), reachable: false)
        guard let connection = connections[node.name] else {
            status.error = connections.errors[node.name]
            return (status, nil)
        }
        do {
            // A read that waits on a lock (a prepared migration holds its tables') must not hang status.
            try connection.execute("SET lock_timeout = '5s'")
            let catalog = Catalog(connection, names: connections.config.names)
            let server = try catalog.server()
            status.version = server.version
            status.currentLSN = server.currentLSN
            var state = try catalog.state(name: node.name, versionNumber: server.versionNumber)
            status.openMigrations = try connection.query(DDLSQL.preparedMigrations(mesh: connections.config.mesh.name)).named.compactMap { $0["gid"] }
            // Sequences' last values need their locks, which an interrupted migration may hold.
            if status.openMigrations.isEmpty { try observeSequences(&state, &status, catalog: catalog, config: connections.config) }
            status.fencedTables = try connection.query(DDLSQL.fencedTables).named.compactMap(Catalog.qualifiedName)
            // Sizes need the tables' locks, which an interrupted migration holds until --resume.
            if status.openMigrations.isEmpty, let storage = try catalog.conflictStorage() {
                status.conflictLogBytes = storage.logBytes
                status.conflictLogRows = storage.logRows
                status.changeTables = storage.changeTables; status.changeBytes = storage.changeBytes; status.changeRows = storage.changeRows
                status.versionTables = storage.versionTables; status.versionBytes = storage.versionBytes; status.versionRows = storage.versionRows
                status.nativeApplyTables = storage.nativeApplyTables
                status.applyInstaller = storage.installer
                status.pluginInstalled = storage.pluginInstalled
            }
            status.reachable = true
            return (status, state)
        } catch {
            // Connected: a failure here is a read the role may not make (or a broken connection), not an unreachable server.
            if let read = context.console.readError(error) {
                status.unreadable = true
                status.error = "connected, but cannot read its state: \(read.message)\(read.missingPrivilege ? " (give the role in its dsn the rights in docs/security.md)" : "")"
            } else {
                status.error = context.console.message(of: error)
            }
            return (status, nil)
        }
    }

    /// Every link's health and problems; peeks the slot of a link that looks stuck.
    func assess(_ view: MeshView, nodes: [NodeStatus], connections: Connections) -> [LinkAssessment] {
        // A reachable node without the publication in a running mesh has not
        // joined (or is joining): its links are expected to be missing.
        let reachable = Set(nodes.filter(\.reachable).map(\.name))
        let pending = Set(view.pending).intersection(reachable)
        let firstMember = view.members.first ?? "MEMBER"
        return view.links.map { link in
            if let node = [link.publisher, link.subscriber].first(where: pending.contains) {
                let status = LinkStatus(publisher: link.publisher, subscriber: link.subscriber,
                                        subscription: view.names.subscription(publisher: link.publisher),
                                        slot: view.names.slot(subscriber: link.subscriber),
                                        publisherReachable: true, subscriberReachable: true)
                return status.notJoined(node, publication: view.names.publication, member: firstMember)
            }
            let status = view.linkStatus(for: link, publisherLSN: nodes.first { $0.name == link.publisher }?.currentLSN)
            var stuck: StuckLink? = nil
            if status.mayBeStuck, let subscriber = connections[link.subscriber], let publisher = connections[link.publisher] {
                stuck = stuckLink(status, subscriber: subscriber, publisher: publisher, config: view.config)
            }
            return status.assess(thresholds, retainedWarningBytes: retainedWarningBytes, stuck: stuck)
        }
    }

    /// An enabled subscription without a worker and with apply errors: peek the
    /// publisher's slot (only while no walsender holds it) for the first
    /// transaction the subscriber has not applied. The error text itself is
    /// only in the subscriber's server log: PostgreSQL keeps no copy.
    func stuckLink(_ link: LinkStatus, subscriber: PGConnection, publisher: PGConnection, config: MeshConfig) -> StuckLink? {
        let errors = link.applyErrorCount ?? 0
        guard let info = try? SubscriptionInfo.read(subscriber, name: link.subscription) else { return nil }
        do {
            guard let pending = try SlotPeek.firstPending(publisher, slot: link.slot, publication: config.names.publication,
                                                          originNone: info.origin == "none", appliedUpTo: info.appliedUpTo,
                                                          console: context.console) else { return nil }
            let first = PgOutput.describe(pending, limit: 3).joined(separator: "; ")
            return StuckLink(publisher: link.publisher, subscriber: link.subscriber, applyErrors: errors,
                             evidence: .pending(xid: pending.xid, commitLSN: pending.finalLSN, changes: first))
        } catch is SlotPeek.Busy {
            return StuckLink(publisher: link.publisher, subscriber: link.subscriber, applyErrors: errors,
                             evidence: .retrying(appliedUpTo: info.appliedUpTo))
        } catch {
            context.console.debug("peek of \(link.slot) on \(link.publisher) failed: \(error)")
            return nil
        }
    }

    func renderJSON(config: MeshConfig, nodes: [NodeStatus], links: [LinkAssessment], drift: [DriftProblem], overall: Health) -> JSON {
        let healthy = links.filter { $0.health == .ok }.count
        return .object([
            ("mesh", .string(config.mesh.name)),
            ("state", .string(overall.rawValue)),
            ("checked_at", .string(ISO8601DateFormatter().string(from: Date()))),
            ("summary", .object([
                ("nodes", .integer(Int64(nodes.count))),
                ("nodes_reachable", .integer(Int64(nodes.filter(\.reachable).count))),
                ("links", .integer(Int64(links.count))),
                ("links_ok", .integer(Int64(healthy))),
                ("drift", .integer(Int64(drift.count))),
            ])),
            ("drift", Self.driftJSON(drift)),
            ("nodes", .array(nodes.map { node in
                .object([
                    ("name", .string(node.name)),
                    ("dsn", .string(node.dsn)),
                    ("reachable", .bool(node.reachable)),
                    ("connected", .bool(node.reachable || node.unreadable)),
                    ("open_migrations", .array(node.openMigrations.map { .string($0) })),
                    ("fenced_tables", .array(node.fencedTables.map { .string($0.sql) })),
                    ("server_version", .optional(node.version)),
                    ("current_lsn", .optional(node.currentLSN?.description)),
                    ("error", .optional(node.error)),
                    ("conflict_log_rows", .optional(node.conflictLogRows)),
                    ("conflict_log_bytes", .optional(node.conflictLogBytes)),
                    ("change_tables", .integer(Int64(node.changeTables))),
                    ("change_tables_bytes", .integer(node.changeBytes)),
                    ("change_tables_rows_estimate", .integer(node.changeRows)),
                    ("version_tables", .integer(Int64(node.versionTables))),
                    ("version_tables_bytes", .integer(node.versionBytes)),
                    ("version_tables_rows_estimate", .integer(node.versionRows)),
                    ("conflict_apply", .optional(ConflictMaintenance.applyLabel(nativeTables: node.nativeApplyTables, changeTables: node.changeTables))),
                    ("conflict_apply_sql_reason", .optional(node.sqlApplyReason(config.mesh.conflictApply))),
                    ("sequence_offset", .optional(node.sequenceOffset.map { Int64($0) })),
                    ("sequences", Self.sequencesJSON(node.sequences)),
                ])
            })),
            ("links", .array(links.map { entry in
                let link = entry.link
                return .object([
                    ("publisher", .string(link.publisher)),
                    ("subscriber", .string(link.subscriber)),
                    ("state", .string(entry.health.rawValue)),
                    ("problems", .array(entry.messages.map { .string($0) })),
                    ("filter", .optional(link.filter?.rawValue)),
                    ("subscription", .string(link.subscription)),
                    ("subscription_exists", .optional(link.subscriptionExists)),
                    ("subscription_enabled", .optional(link.subscriptionEnabled)),
                    ("worker_running", .optional(link.workerRunning)),
                    ("worker_pid", .optional(link.workerPID.map { Int64($0) })),
                    ("slot", .string(link.slot)),
                    ("slot_exists", .optional(link.slotExists)),
                    ("slot_plugin", .optional(link.slotPlugin)),
                    ("slot_active", .optional(link.slotActive)),
                    ("wal_status", .optional(link.walStatus)),
                    ("publisher_lsn", .optional(link.publisherLSN?.description)),
                    ("confirmed_flush_lsn", .optional(link.confirmedFlushLSN?.description)),
                    ("received_lsn", .optional(link.receivedLSN?.description)),
                    ("lag_bytes", .optional(link.lagBytes.map { Int64(clamping: $0) })),
                    ("lag_seconds", .optional(link.lagSeconds)),
                    ("retained_wal_bytes", .optional(link.retainedBytes.map { Int64(clamping: $0) })),
                    ("apply_error_count", .optional(link.applyErrorCount)),
                    ("last_error", .optional(link.lastError)),
                    ("stuck", .bool(entry.stuck != nil)),
                    ("failing_lsn", .optional(entry.stuck?.failingLSN?.description)),
                ])
            })),
        ])
    }

    /// ", 2 schema drifts, 1 sequence problem" for the header line (sequence problems are not schema drift).
    static func problemCounts(_ drift: [DriftProblem]) -> String {
        let sequences = drift.filter { $0.kind == "sequence" }.count
        let schema = drift.count - sequences
        return (schema == 0 ? "" : ", \(schema) schema drift\(schema == 1 ? "" : "s")")
            + (sequences == 0 ? "" : ", \(sequences) sequence problem\(sequences == 1 ? "" : "s")")
    }

    func renderTable(config: MeshConfig, nodes: [NodeStatus], links: [LinkAssessment], drift: [DriftProblem], overall: Health, console: Console) {
        let healthy = links.filter { $0.health == .ok }.count
        console.print("Mesh \(config.mesh.name): \(overall.rawValue.uppercased()) — \(nodes.filter(\.reachable).count)/\(nodes.count) nodes up, \(healthy)/\(links.count) links ok"
                      + Self.problemCounts(drift))
        console.print()
        var nodeRows = [["NODE", "STATE", "VERSION", "LSN", "CONFLICT LOG", "CHANGES", "VERSIONS", "APPLY", "DSN"]]
        for node in nodes {
            let log = node.conflictLogRows.map { "\($0) row\($0 == 1 ? "" : "s"), \(formatBytes(UInt64(max(0, node.conflictLogBytes ?? 0))))" } ?? "-"
            let changes = node.changeTables == 0 ? "-" : formatBytes(UInt64(max(0, node.changeBytes)))
            let versions = node.versionTables == 0 ? "-" : "\(formatBytes(UInt64(max(0, node.versionBytes)))) (~\(node.versionRows) rows)"
            nodeRows.append([node.name, node.reachable ? "up" : node.unreadable ? "UNREADABLE" : "DOWN", node.version ?? "-", node.currentLSN?.description ?? "-",
                             log, changes, versions,
                             ConflictMaintenance.applyLabel(nativeTables: node.nativeApplyTables, changeTables: node.changeTables) ?? "-", node.dsn])
        }
        printTable(nodeRows, console: console)
        for node in nodes {
            if let reason = node.sqlApplyReason(config.mesh.conflictApply) {
                console.print("\(node.name): conflicts apply with SQL: \(reason)")
            }
        }
        renderSequences(config: config, nodes: nodes, console: console)
        console.print()
        var linkRows = [["LINK", "SUBSCRIPTION", "WORKER", "SLOT", "FILTER", "LAG", "LAG(s)", "RETAINED", "STATE"]]
        for entry in links {
            let link = entry.link
            let subscription: String = {
                switch (link.subscriptionExists, link.subscriptionEnabled) {
                case (true?, true?): return "enabled"
                case (true?, false?): return "DISABLED"
                case (false?, _): return "MISSING"
                default: return "?"
                }
            }()
            let worker = entry.stuck != nil ? "STUCK" : link.workerRunning.map { $0 ? "running" : "STOPPED" } ?? "?"
            let slot: String = link.slotExists == false ? "MISSING" : link.slotActive.map { $0 ? "active" : "inactive" } ?? "?"
            linkRows.append(["\(link.publisher) -> \(link.subscriber)", subscription, worker, slot, link.filter?.rawValue ?? "?",
                             link.lagBytes.map(formatBytes) ?? "-", link.lagSeconds.map { String(format: "%.1f", $0) } ?? "-",
                             link.retainedBytes.map(formatBytes) ?? "-", entry.health.rawValue])
        }
        printTable(linkRows, console: console)
        let problems = links.flatMap { entry in entry.messages.map { "\(entry.link.publisher) -> \(entry.link.subscriber): \($0)" } }
            + nodes.filter { !$0.reachable }.map { "\($0.name): \($0.error ?? "unreachable")" }
            + nodes.flatMap { DDLProcedure.interrupted(node: $0.name, prepared: $0.openMigrations, fenced: $0.fencedTables) }
            + Self.driftLines(drift)
        if !problems.isEmpty {
            console.print()
            console.print("Problems:")
            for problem in problems { console.print("  " + problem) }
        }
    }
}

func printTable(_ rows: [[String]], console: Console) {
    guard let header = rows.first else { return }
    var widths = header.map(\.count)
    for row in rows { for (index, cell) in row.enumerated() where index < widths.count { widths[index] = max(widths[index], cell.count) } }
    for row in rows {
        let cells = row.enumerated().map { index, cell in
            index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
        }
        console.print(cells.joined(separator: "  "))
    }
}
