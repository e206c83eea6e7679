import Foundation

/// Prometheus text exposition (format 0.0.4) of what `status` observes:
/// `mmlite metrics` prints it, `mmlite exporter` serves it on /metrics.
/// Pure: series names, labels, escaping and the HELP/TYPE lines are decided
/// here; the CLI observes the nodes and fills a `MetricsSnapshot`.
/// The series are listed with their meaning in docs/monitoring.md.
public enum MetricType: String, Sendable {
    case gauge, counter
}

/// One metric family: every sample of one name.
public struct MetricFamily: Sendable, Equatable {
    public struct Sample: Sendable, Equatable {
        public var labels: [Label]
        public var value: Double
        public init(_ labels: [Label], _ value: Double) {
            self.labels = labels
            self.value = value
        }
    }
    public struct Label: Sendable, Equatable {
        public var name: String
        public var value: String
        public init(_ name: String, _ value: String) {
            self.name = name
            self.value = value
        }
    }

    public var name: String
    public var help: String
    public var type: MetricType
    public var samples: [Sample]

    public init(_ name: String, _ type: MetricType, _ help: String, samples: [Sample] = []) {
        self.name = name
        self.type = type
        self.help = help
        self.samples = samples
    }
}

public enum Exposition {
    /// The Content-Type of the text format.
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    /// Every family with at least one sample: `# HELP`, `# TYPE`, then its samples.
    public static func render(_ families: [MetricFamily]) -> String {
        var text = ""
        for family in families where !family.samples.isEmpty {
            text += "# HELP \(family.name) \(escapeHelp(family.help))\n"
            text += "# TYPE \(family.name) \(family.type.rawValue)\n"
            for sample in family.samples {
                text += family.name
                if !sample.labels.isEmpty {
                    text += "{" + sample.labels.map { "\($0.name)=\"\(escapeLabelValue($0.value))\"" }.joined(separator: ",") + "}"
                }
                text += " " + format(sample.value) + "\n"
            }
        }
        return text
    }

    /// A label value: backslash, double quote and line feed escaped.
    public static func escapeLabelValue(_ value: String) -> String {
        var out = ""
        for character in value {
            switch character {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.append(character)
            }
        }
        return out
    }

    /// HELP text: backslash and line feed escaped.
    public static func escapeHelp(_ text: String) -> String {
        text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\n", with: "\\n")
    }

    /// A sample value: integers without a fraction, NaN and infinities as Prometheus spells them.
    public static func format(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return "\(value)"
    }

    /// Whether `name` is a valid metric or label name (`[a-zA-Z_:][a-zA-Z0-9_:]*`; labels without `:`).
    public static func isValidName(_ name: String, label: Bool = false) -> Bool {
        guard let first = name.unicodeScalars.first else { return false }
        func allowed(_ scalar: Unicode.Scalar, leading: Bool) -> Bool {
            if scalar == "_" || (!label && scalar == ":") { return true }
            if ("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar) { return true }
            return !leading && ("0"..."9").contains(scalar)
        }
        return allowed(first, leading: true) && name.unicodeScalars.dropFirst().allSatisfy { allowed($0, leading: false) }
    }
}

/// What one observation of the mesh found, in the terms of the series.
public struct MetricsSnapshot: Sendable {
    public struct Node: Sendable {
        public var name: String
        public var up: Bool
        /// `server_version` ("15.20") and `server_version_num` (150020).
        public var serverVersion: String?
        public var serverVersionNumber: Int?
        public var currentLSN: LSN?
        /// Seconds the observation of this node took.
        public var scrapeSeconds: Double?
        public var conflictLogRows: Int64?
        public var conflictLogBytes: Int64?
        /// Rows of mmlite.conflicts by table and kind (empty: none, or no log).
        public var conflicts: [ConflictCount] = []
        /// Change and version tables of opted-in tables (nil: no conflict handling installed).
        public var changeTablesBytes: Int64?
        public var changeTablesRows: Int64?
        public var versionTablesBytes: Int64?
        public var versionTablesRows: Int64?
        public var sequenceOffset: Int?
        public var openMigrations: Int?

        public init(name: String, up: Bool) {
            self.name = name
            self.up = up
        }
    }

    public struct ConflictCount: Sendable, Equatable {
        public var table: String
        public var kind: String
        public var rows: Int64
        public init(table: String, kind: String, rows: Int64) {
            self.table = table
            self.kind = kind
            self.rows = rows
        }
    }

    public var mesh: String
    public var nodes: [Node]
    public var links: [LinkAssessment]
    /// Seconds the whole observation took.
    public var scrapeSeconds: Double?

    public init(mesh: String, nodes: [Node], links: [LinkAssessment], scrapeSeconds: Double? = nil) {
        self.mesh = mesh
        self.nodes = nodes
        self.links = links
        self.scrapeSeconds = scrapeSeconds
    }

    /// Whether a link replicates: both ends answered, the subscription's
    /// worker runs, and nothing critical is wrong with it (lag over a
    /// warning threshold still counts as up).
    public static func isUp(_ link: LinkAssessment) -> Bool {
        let status = link.link
        return status.publisherReachable && status.subscriberReachable && status.workerRunning == true
            && link.stuck == nil && link.health <= .warning
    }

    /// Every series, in the order docs/monitoring.md lists them.
    public var families: [MetricFamily] {
        let mesh = MetricFamily.Label("mesh", self.mesh)
        func node(_ node: Node) -> [MetricFamily.Label] { [mesh, .init("node", node.name)] }
        func link(_ link: LinkAssessment) -> [MetricFamily.Label] {
            [mesh, .init("publisher", link.link.publisher), .init("subscriber", link.link.subscriber)]
        }
        func nodeSeries(_ name: String, _ help: String, type: MetricType = .gauge, _ value: (Node) -> Double?) -> MetricFamily {
            MetricFamily(name, type, help, samples: nodes.compactMap { entry in value(entry).map { .init(node(entry), $0) } })
        }
        func linkSeries(_ name: String, _ help: String, type: MetricType = .gauge, _ value: (LinkAssessment) -> Double?) -> MetricFamily {
            MetricFamily(name, type, help, samples: links.compactMap { entry in value(entry).map { .init(link(entry), $0) } })
        }
        let states: [Health] = [.ok, .warning, .critical, .unknown]
        return [
            nodeSeries("mmlite_node_up", "1 if the node answered this scrape and its state was read, 0 if not (connection refused, timed out or failed, or a read the role may not make).") { $0.up ? 1 : 0 },
            MetricFamily("mmlite_node_server_info", .gauge, "Always 1 for a node that answered; the server_version label is its PostgreSQL version.",
                         samples: nodes.compactMap { entry in entry.serverVersion.map { .init(node(entry) + [.init("server_version", $0)], 1) } }),
            nodeSeries("mmlite_node_server_version_number", "The node's server_version_num (e.g. 150020 for 15.20).") { $0.serverVersionNumber.map { Double($0) } },
            nodeSeries("mmlite_node_wal_lsn_bytes", "The node's current WAL position (pg_current_wal_lsn) as a byte offset.") { $0.currentLSN.map { Double($0.value) } },
            nodeSeries("mmlite_node_scrape_duration_seconds", "Seconds the observation of the node took in this scrape.") { $0.scrapeSeconds },
            nodeSeries("mmlite_node_open_migrations", "Prepared transactions of an interrupted `mmlite ddl` on the node (finish with `mmlite ddl --resume`).") { $0.openMigrations.map { Double($0) } },
            linkSeries("mmlite_link_up", "1 if the link publisher -> subscriber replicates: both nodes answer, the apply worker runs, nothing critical.") { Self.isUp($0) ? 1 : 0 },
            MetricFamily("mmlite_link_state", .gauge, "The link's health as `mmlite status` reports it: 1 for the current state label, 0 for the others.",
                         samples: links.flatMap { entry in states.map { .init(link(entry) + [.init("state", $0.rawValue)], entry.health == $0 ? 1 : 0) } }),
            linkSeries("mmlite_link_lag_bytes", "WAL the subscriber has not confirmed yet (publisher's current LSN minus the slot's confirmed_flush_lsn).") { $0.link.lagBytes.map { Double($0) } },
            linkSeries("mmlite_link_lag_seconds", "The walsender's replay lag; 0 while the link streams with nothing pending.") { $0.link.lagSeconds },
            linkSeries("mmlite_link_retained_wal_bytes", "WAL the link's slot keeps on the publisher (current LSN minus the slot's restart_lsn).") { $0.link.retainedBytes.map { Double($0) } },
            linkSeries("mmlite_link_apply_errors_total", "Apply errors of the link's subscription (pg_stat_subscription_stats, PostgreSQL 15+).", type: .counter) { $0.link.applyErrorCount.map { Double($0) } },
            linkSeries("mmlite_link_stuck", "1 if the subscription's worker keeps failing on one transaction (see `mmlite resolve`), else 0.") { $0.stuck == nil ? 0 : 1 },
            MetricFamily("mmlite_conflict_log_entries", .gauge, "Rows of the node's conflict log (mmlite.conflicts) by table and kind; pruning lowers it.",
                         samples: nodes.flatMap { entry in entry.conflicts.map { .init(node(entry) + [.init("table", $0.table), .init("kind", $0.kind)], Double($0.rows)) } }),
            nodeSeries("mmlite_conflict_log_rows", "Rows of the node's conflict log (mmlite.conflicts).") { $0.conflictLogRows.map { Double($0) } },
            nodeSeries("mmlite_conflict_log_bytes", "Size of the node's conflict log with its indexes and TOAST.") { $0.conflictLogBytes.map { Double($0) } },
            nodeSeries("mmlite_change_tables_bytes", "Size of the change tables of the node's opted-in tables.") { $0.changeTablesBytes.map { Double($0) } },
            nodeSeries("mmlite_change_tables_rows", "Estimated rows (pg_class.reltuples) of the node's change tables.") { $0.changeTablesRows.map { Double($0) } },
            nodeSeries("mmlite_version_tables_bytes", "Size of the version tables of the node's opted-in tables, tombstones included.") { $0.versionTablesBytes.map { Double($0) } },
            nodeSeries("mmlite_version_tables_rows", "Estimated rows (pg_class.reltuples) of the node's version tables, tombstones included.") { $0.versionTablesRows.map { Double($0) } },
            nodeSeries("mmlite_sequence_offset", "The node's residue class for sequence-fed keys (sequences = \"node-offset\").") { $0.sequenceOffset.map { Double($0) } },
            MetricFamily("mmlite_scrape_duration_seconds", .gauge, "Seconds the whole observation of the mesh took.",
                         samples: scrapeSeconds.map { [.init([mesh], $0)] } ?? []),
        ]
    }

    public var exposition: String { Exposition.render(families) }
}

/// The query behind `mmlite_conflict_log_entries` (run where mmlite.conflicts exists).
public enum MetricsSQL {
    public static let conflictsByTableAndKind = """
        SELECT c.table_name AS table_name, c.kind AS kind, count(*) AS entries
        FROM mmlite.conflicts c GROUP BY c.table_name, c.kind ORDER BY 1, 2
        """
}

/// `--listen HOST:PORT` of `mmlite exporter`: `127.0.0.1:9187`, `[::1]:9187`,
/// `0.0.0.0:9187`, or `:9187` (every IPv4 address). Port 0 picks a free one.
public struct ListenAddress: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: UInt16
    public var isIPv6: Bool { host.contains(":") }

    public init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }

    public init?(_ text: String) {
        let host: Substring, port: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            port = text[text.index(close, offsetBy: 2)...]
            guard host.contains(":") else { return nil }
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = text[..<colon]
            port = text[text.index(after: colon)...]
            guard !host.contains(":") else { return nil }
        }
        guard let number = UInt16(port) else { return nil }
        self.host = host.isEmpty ? "0.0.0.0" : String(host)
        self.port = number
    }

    public var description: String { isIPv6 ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// The request line of an HTTP/1.x request, as the exporter reads it.
public struct HTTPRequestHead: Sendable, Equatable {
    public var method: String
    /// The path without the query string.
    public var path: String

    /// `text`: the request head (request line first). Nil unless it starts
    /// with `METHOD /path HTTP/1.x`.
    public init?(_ text: String) {
        guard let line = text.split(separator: "\r\n", maxSplits: 1, omittingEmptySubsequences: false).first else { return nil }
        let parts = line.split(separator: " ", omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[0].isEmpty, parts[0].allSatisfy({ $0.isUppercase }),
              parts[1].hasPrefix("/"), parts[2].hasPrefix("HTTP/1.") else { return nil }
        method = String(parts[0])
        path = String(parts[1].split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)[0])
    }

    /// Where the head ends (the index after the empty line), if it has.
    public static func endOfHead(in bytes: [UInt8]) -> Int? {
        guard bytes.count >= 4 else { return nil }
        for index in 3..<bytes.count where bytes[index - 3] == 13 && bytes[index - 2] == 10 && bytes[index - 1] == 13 && bytes[index] == 10 {
            return index + 1
        }
        return nil
    }

    public static func reason(_ status: Int) -> String {
        switch status {
        case 200: return "OK"
        case 400: return "Bad Request"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 431: return "Request Header Fields Too Large"
        case 500: return "Internal Server Error"
        case 503: return "Service Unavailable"
        default: return "Status \(status)"
        }
    }
}
