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
        for link in Planner.links(of: config.nodes.map(\.name)) {
            if let node = [link.publisher, link.subscriber].first(where: pending.contains) {
                let status = LinkStatus(publisher: link.publisher, subscriber: link.subscriber,
                                        subscription: names.subscription(publisher: link.publisher),
                                        slot: names.slot(subscriber: link.subscriber),
                                        publisherReachable: true, subscriberReachable: true)
                links.append((status, .warning, ["\(node) has not joined the mesh (no publication \(names.publication) on it): mmlite join \(node) --from \(firstMember)"]))
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
            if let retained = status.retainedBytes, retained >= retainedWarningBytes {
                health = max(health, .warning)
                problems.append("slot \(status.slot) retains \(formatBytes(retained)) of WAL on \(link.publisher)" + (status.subscriberReachable ? "" : "; if \(link.subscriber) is gone for good: mmlite part \(link.subscriber) --force"))
            } else if !status.subscriberReachable && status.slotExists == true {
                problems.append("\(link.publisher)'s slot \(status.slot) keeps WAL for \(link.subscriber) while it is unreachable; if it is gone for good: mmlite part \(link.subscriber) --force")
            }
            links.append((status, health, problems))
        }
        var overall = links.map(\.1).max() ?? .ok
        if nodes.contains(where: { !$0.reachable }) { overall = max(overall, .critical) }

        switch format {
        case .json:
            console.print(renderJSON(config: config, nodes: nodes, links: links, overall: overall).render())
        case .table:
            renderTable(config: config, nodes: nodes, links: links, overall: overall, console: console)
        }
        if check { return ExitStatus(rawValue: overall.nagiosCode) ?? .unknown }
        return .ok
    }

    func renderJSON(config: MeshConfig, nodes: [NodeStatus], links: [(LinkStatus, Health, [String])], overall: Health) -> JSON {
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
                ])
            })),
            ("links", .array(links.map { link, health, problems in
                .object([
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
                ])
            })),
        ])
    }

    func renderTable(config: MeshConfig, nodes: [NodeStatus], links: [(LinkStatus, Health, [String])], overall: Health, console: Console) {
        let healthy = links.filter { $0.1 == .ok }.count
        console.print("Mesh \(config.mesh.name): \(overall.rawValue.uppercased()) — \(nodes.filter(\.reachable).count)/\(nodes.count) nodes up, \(healthy)/\(links.count) links ok")
        console.print()
        var nodeRows = [["NODE", "STATE", "VERSION", "LSN", "DSN"]]
        for node in nodes {
            nodeRows.append([node.name, node.reachable ? "up" : "DOWN", node.version ?? "-", node.currentLSN?.description ?? "-", node.dsn])
        }
        printTable(nodeRows, console: console)
        console.print()
        var linkRows = [["LINK", "SUBSCRIPTION", "WORKER", "SLOT", "FILTER", "LAG", "LAG(s)", "RETAINED", "STATE"]]
        for (link, health, _) in links {
            let subscription: String = {
                switch (link.subscriptionExists, link.subscriptionEnabled) {
                case (true?, true?): return "enabled"
                case (true?, false?): return "DISABLED"
                case (false?, _): return "MISSING"
                default: return "?"
                }
            }()
            let worker = link.workerRunning.map { $0 ? "running" : "STOPPED" } ?? "?"
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
