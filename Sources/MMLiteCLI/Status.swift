import Foundation
import MMLiteCore
import PostgresClient

struct NodeStatus {
    var name: String
    var dsn: String
    var reachable: Bool
    var error: String?
    var version: String?
    var currentLSN: LSN?
    /// mmlite.conflicts rows and size (nil: no conflict log on this node).
    var conflictLogRows: Int64?
    var conflictLogBytes: Int64?
    /// Change and version tables of opted-in tables: count, total size, estimated rows.
    var changeTables = 0, changeBytes: Int64 = 0, changeRows: Int64 = 0
    var versionTables = 0, versionBytes: Int64 = 0, versionRows: Int64 = 0
}

/// A link whose apply worker keeps failing on one transaction.
struct StuckLink {
    var failingLSN: LSN?
    var summary: String
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
        let names = config.names
        var nodes: [NodeStatus] = []
        var majors: [String: Int] = [:]
        var slotRows: [String: [String: [String?]]] = [:]
        var subscriptionRows: [String: [String: [String?]]] = [:]
        var published: Set<String> = []

        for node in config.nodes {
            var status = NodeStatus(name: node.name, dsn: DSN.masked(node.dsn), reachable: false)
            guard let connection = connections[node.name] else {
                status.error = connections.errors[node.name]
                nodes.append(status)
                continue
            }
            do {
                let basics = try connection.query("SELECT current_setting('server_version'), pg_current_wal_lsn()::text, current_setting('server_version_num')")
                status.version = basics.rows.first?[0].flatMap { $0.split(separator: " ").first.map(String.init) }
                status.currentLSN = basics.rows.first?[1].flatMap { LSN($0) }
                majors[node.name] = (Int(basics.rows.first?[2] ?? "0") ?? 0) / 10000
                let slots = try connection.query("""
                    SELECT s.slot_name, s.plugin, s.active, s.active_pid, s.restart_lsn::text, s.confirmed_flush_lsn::text,
                           extract(epoch FROM r.replay_lag)::float8, s.wal_status
                    FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
                    WHERE left(s.slot_name::text, length($1)) = $1
                    """, [names.prefix])
                if try connection.query("SELECT 1 FROM pg_publication WHERE pubname = $1", [names.publication]).scalar != nil {
                    published.insert(node.name)
                }
                slotRows[node.name] = Dictionary(slots.rows.compactMap { row in row[0].map { ($0, row) } }, uniquingKeysWith: { a, _ in a })
                let statsJoin = (majors[node.name] ?? 0) >= 15
                    ? "LEFT JOIN pg_stat_subscription_stats st ON st.subid = s.oid" : ""
                let errorColumn = (majors[node.name] ?? 0) >= 15 ? "st.apply_error_count + st.sync_error_count" : "NULL::bigint"
                let subscriptions = try connection.query("""
                    SELECT DISTINCT ON (s.subname) s.subname, s.subenabled, w.pid, w.received_lsn::text, \(errorColumn), s.oid
                    FROM pg_subscription s
                    LEFT JOIN pg_stat_subscription w ON w.subid = s.oid AND w.relid IS NULL
                    \(statsJoin)
                    WHERE s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                      AND left(s.subname::text, length($1)) = $1
                    ORDER BY s.subname, w.pid
                    """, [names.prefix])
                subscriptionRows[node.name] = Dictionary(subscriptions.rows.compactMap { row in row[0].map { ($0, row) } }, uniquingKeysWith: { a, _ in a })
                if let sizes = try connection.query(ConflictMaintenance.sizes).rows.first {
                    func int(_ index: Int) -> Int64 { Int64(sizes[index] ?? "0") ?? 0 }
                    status.conflictLogBytes = sizes[0].flatMap { Int64($0) }
                    status.changeTables = Int(int(1)); status.changeBytes = int(2); status.changeRows = int(3)
                    status.versionTables = Int(int(4)); status.versionBytes = int(5); status.versionRows = int(6)
                    if status.conflictLogBytes != nil {
                        status.conflictLogRows = try connection.query(ConflictMaintenance.logRows).scalar.flatMap { Int64($0) }
                    }
                }
                status.reachable = true
            } catch {
                status.error = console.redact((error as? PGError)?.message ?? "\(error)")
            }
            nodes.append(status)
        }

        // A reachable node without the publication in a running mesh has not
        // joined (or is joining): its links are expected to be missing.
        let running = subscriptionRows.values.contains { !$0.isEmpty }
        let pending = Set(nodes.filter { running && $0.reachable && !published.contains($0.name) }.map(\.name))
        let firstMember = config.nodes.map(\.name).first { published.contains($0) } ?? "MEMBER"

        var links: [(LinkStatus, Health, [String])] = []
        var stuckLinks: [StuckLink?] = []
        for link in Planner.links(of: config.nodes.map(\.name)) {
            if let node = [link.publisher, link.subscriber].first(where: pending.contains) {
                let status = LinkStatus(publisher: link.publisher, subscriber: link.subscriber,
                                        subscription: names.subscription(publisher: link.publisher),
                                        slot: names.slot(subscriber: link.subscriber),
                                        publisherReachable: true, subscriberReachable: true)
                links.append((status, .warning, ["\(node) has not joined the mesh (no publication \(names.publication) on it): mmlite join \(node) --from \(firstMember)"]))
                stuckLinks.append(nil)
                continue
            }
            let publisher = nodes.first { $0.name == link.publisher }
            let subscriber = nodes.first { $0.name == link.subscriber }
            var status = LinkStatus(publisher: link.publisher, subscriber: link.subscriber,
                                    subscription: names.subscription(publisher: link.publisher),
                                    slot: names.slot(subscriber: link.subscriber),
                                    publisherReachable: publisher?.reachable ?? false,
                                    subscriberReachable: subscriber?.reachable ?? false)
            if let p = majors[link.publisher], let s = majors[link.subscriber] {
                status.filter = try? LinkFilter.choose(config.mesh.filter, publisherMajor: p, subscriberMajor: s)
            }
            if status.publisherReachable {
                status.publisherLSN = publisher?.currentLSN
                if let row = slotRows[link.publisher]?[status.slot] {
                    status.slotExists = true
                    status.slotPlugin = row[1]
                    status.slotActive = row[2] == "t"
                    status.restartLSN = row[4].flatMap { LSN($0) }
                    status.confirmedFlushLSN = row[5].flatMap { LSN($0) }
                    status.replayLagSeconds = row[6].flatMap { Double($0) }
                    status.walStatus = row[7]
                    if status.slotPlugin == "mmlite" { status.filter = .mmlite }
                } else {
                    status.slotExists = false
                }
            }
            if status.subscriberReachable {
                if let row = subscriptionRows[link.subscriber]?[status.subscription] {
                    status.subscriptionExists = true
                    status.subscriptionEnabled = row[1] == "t"
                    status.workerPID = row[2].flatMap { Int($0) }
                    status.receivedLSN = row[3].flatMap { LSN($0) }
                    status.applyErrorCount = row[4].flatMap { Int64($0) }
                } else {
                    status.subscriptionExists = false
                }
            }
            var (health, problems) = status.evaluate(thresholds)
            var stuck: StuckLink? = nil
            if status.subscriptionEnabled == true, status.workerPID == nil, (status.applyErrorCount ?? 0) > 0, status.publisherReachable,
               let subscriberConnection = connections[link.subscriber], let publisherConnection = connections[link.publisher] {
                stuck = stuckLink(status, subscriber: subscriberConnection, publisher: publisherConnection, config: config)
            }
            if let stuck {
                health = .critical
                problems.removeAll { $0.hasPrefix("no apply worker runs") }
                problems.append(stuck.summary)
            }
            if let retained = status.retainedBytes, retained >= retainedWarningBytes {
                health = max(health, .warning)
                problems.append("slot \(status.slot) retains \(formatBytes(retained)) of WAL on \(link.publisher)" + (status.subscriberReachable ? "" : "; if \(link.subscriber) is gone for good: mmlite part \(link.subscriber) --force"))
            } else if !status.subscriberReachable && status.slotExists == true {
                problems.append("\(link.publisher)'s slot \(status.slot) keeps WAL for \(link.subscriber) while it is unreachable; if it is gone for good: mmlite part \(link.subscriber) --force")
            }
            links.append((status, health, problems))
            stuckLinks.append(stuck)
        }
        var overall = links.map(\.1).max() ?? .ok
        if nodes.contains(where: { !$0.reachable }) { overall = max(overall, .critical) }

        switch format {
        case .json:
            console.print(renderJSON(config: config, nodes: nodes, links: links, overall: overall, stuck: stuckLinks).render())
        case .table:
            renderTable(config: config, nodes: nodes, links: links, overall: overall, stuck: stuckLinks, console: console)
        }
        if check { return ExitStatus(rawValue: overall.nagiosCode) ?? .unknown }
        return .ok
    }

    /// An enabled subscription without a worker and with apply errors: peek the
    /// publisher's slot (only while no walsender holds it) for the first
    /// transaction the subscriber has not applied. The error text itself is
    /// only in the subscriber's server log: PostgreSQL keeps no copy.
    func stuckLink(_ link: LinkStatus, subscriber: PGConnection, publisher: PGConnection, config: MeshConfig) -> StuckLink? {
        let errors = link.applyErrorCount ?? 0
        let advice = "see \(link.subscriber)'s server log for the error; to skip it: mmlite resolve \(link.subscriber) --skip --from \(link.publisher)"
        guard let info = try? SubscriptionInfo.read(subscriber, name: link.subscription) else { return nil }
        do {
            guard let pending = try SlotPeek.firstPending(publisher, slot: link.slot, publication: config.names.publication,
                                                          originNone: info.origin == "none", appliedUpTo: info.appliedUpTo,
                                                          console: context.console) else { return nil }
            let first = SlotPeek.describe(pending, limit: 3).joined(separator: "; ")
            return StuckLink(failingLSN: pending.finalLSN,
                             summary: "stuck: the apply worker keeps failing (\(errors) apply errors) on transaction \(pending.xid) of \(link.publisher), commit LSN \(pending.finalLSN): \(first); \(advice)")
        } catch is SlotPeek.Busy {
            return StuckLink(failingLSN: nil, summary: "stuck: no apply worker and \(errors) apply errors (the worker is retrying; the failing transaction follows \(info.appliedUpTo?.description ?? "the start")); \(advice)")
        } catch {
            context.console.debug("peek of \(link.slot) on \(link.publisher) failed: \(error)")
            return nil
        }
    }

    func renderJSON(config: MeshConfig, nodes: [NodeStatus], links: [(LinkStatus, Health, [String])], overall: Health, stuck: [StuckLink?]) -> JSON {
        let healthy = links.filter { $0.1 == .ok }.count
        return .object([
            ("mesh", .string(config.mesh.name)),
            ("state", .string(overall.rawValue)),
            ("checked_at", .string(ISO8601DateFormatter().string(from: Date()))),
            ("summary", .object([
                ("nodes", .integer(Int64(nodes.count))),
                ("nodes_reachable", .integer(Int64(nodes.filter(\.reachable).count))),
                ("links", .integer(Int64(links.count))),
                ("links_ok", .integer(Int64(healthy))),
            ])),
            ("nodes", .array(nodes.map { node in
                .object([
                    ("name", .string(node.name)),
                    ("dsn", .string(node.dsn)),
                    ("reachable", .bool(node.reachable)),
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
                ])
            })),
            ("links", .array(links.enumerated().map { index, entry in
                let (link, health, problems) = entry
                return .object([
                    ("publisher", .string(link.publisher)),
                    ("subscriber", .string(link.subscriber)),
                    ("state", .string(health.rawValue)),
                    ("problems", .array(problems.map { .string($0) })),
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
                    ("stuck", .bool(stuck[index] != nil)),
                    ("failing_lsn", .optional(stuck[index]?.failingLSN?.description)),
                ])
            })),
        ])
    }

    func renderTable(config: MeshConfig, nodes: [NodeStatus], links: [(LinkStatus, Health, [String])], overall: Health, stuck: [StuckLink?], console: Console) {
        let healthy = links.filter { $0.1 == .ok }.count
        console.print("Mesh \(config.mesh.name): \(overall.rawValue.uppercased()) — \(nodes.filter(\.reachable).count)/\(nodes.count) nodes up, \(healthy)/\(links.count) links ok")
        console.print()
        var nodeRows = [["NODE", "STATE", "VERSION", "LSN", "CONFLICT LOG", "CHANGES", "VERSIONS", "DSN"]]
        for node in nodes {
            let log = node.conflictLogRows.map { "\($0) row\($0 == 1 ? "" : "s"), \(formatBytes(UInt64(max(0, node.conflictLogBytes ?? 0))))" } ?? "-"
            let changes = node.changeTables == 0 ? "-" : formatBytes(UInt64(max(0, node.changeBytes)))
            let versions = node.versionTables == 0 ? "-" : "\(formatBytes(UInt64(max(0, node.versionBytes)))) (~\(node.versionRows) rows)"
            nodeRows.append([node.name, node.reachable ? "up" : "DOWN", node.version ?? "-", node.currentLSN?.description ?? "-",
                             log, changes, versions, node.dsn])
        }
        printTable(nodeRows, console: console)
        console.print()
        var linkRows = [["LINK", "SUBSCRIPTION", "WORKER", "SLOT", "FILTER", "LAG", "LAG(s)", "RETAINED", "STATE"]]
        for (index, (link, health, _)) in links.enumerated() {
            let subscription: String = {
                switch (link.subscriptionExists, link.subscriptionEnabled) {
                case (true?, true?): return "enabled"
                case (true?, false?): return "DISABLED"
                case (false?, _): return "MISSING"
                default: return "?"
                }
            }()
            let worker = stuck[index] != nil ? "STUCK" : link.workerRunning.map { $0 ? "running" : "STOPPED" } ?? "?"
            let slot: String = link.slotExists == false ? "MISSING" : link.slotActive.map { $0 ? "active" : "inactive" } ?? "?"
            linkRows.append(["\(link.publisher) -> \(link.subscriber)", subscription, worker, slot, link.filter?.rawValue ?? "?",
                             link.lagBytes.map(formatBytes) ?? "-", link.lagSeconds.map { String(format: "%.1f", $0) } ?? "-",
                             link.retainedBytes.map(formatBytes) ?? "-", health.rawValue])
        }
        printTable(linkRows, console: console)
        let problems = links.flatMap { link, _, problems in problems.map { "\(link.publisher) -> \(link.subscriber): \($0)" } }
            + nodes.filter { !$0.reachable }.map { "\($0.name): \($0.error ?? "unreachable")" }
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
