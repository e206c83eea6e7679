/// What exists on one node, as far as this mesh is concerned (observed by
/// the command-line tool, compared with the config by `Planner`).
public struct NodeState: Sendable, Equatable {
    public var name: String
    /// `server_version_num`, e.g. 150020.
    public var versionNumber: Int
    /// nil: the publication does not exist.
    public var publication: PublicationState?
    /// This mesh's slots on this node, by name.
    public var slots: [String: SlotState]
    /// This mesh's subscriptions on this node, by name.
    public var subscriptions: [String: SubscriptionState]
    /// This mesh's rows of `mmlite.sequence_offsets` (nil: the table does not exist).
    public var sequenceOffsets: [SequenceOffset]? = nil
    /// What `mmlite.node_offset()` returns (nil: not installed).
    public var nodeOffset: Int? = nil
    /// Sequences feeding the mesh tables' columns.
    public var sequences: [MeshSequence] = []

    public init(name: String, versionNumber: Int, publication: PublicationState? = nil,
                slots: [String: SlotState] = [:], subscriptions: [String: SubscriptionState] = [:]) {
        self.name = name
        self.versionNumber = versionNumber
        self.publication = publication
        self.slots = slots
        self.subscriptions = subscriptions
    }

    public var capabilities: ServerCapabilities { ServerCapabilities(versionNumber: versionNumber) }
    public var major: Int { capabilities.major }
}

public struct PublicationState: Sendable, Equatable {
    public var tables: Set<QualifiedName>
    public var allTables: Bool
    public init(tables: Set<QualifiedName>, allTables: Bool = false) {
        self.tables = tables
        self.allTables = allTables
    }
}

public struct SlotState: Sendable, Equatable {
    public var plugin: String
    public var database: String?
    public var active: Bool
    /// The walsender holding the slot.
    public var activePID: Int? = nil
    public var restartLSN: LSN? = nil
    public var confirmedFlushLSN: LSN? = nil
    /// `wal_status`: reserved, extended, unreserved or lost.
    public var walStatus: String? = nil
    /// The walsender's replay lag (`pg_stat_replication`), in seconds.
    public var replayLagSeconds: Double? = nil

    public init(plugin: String, database: String? = nil, active: Bool = false) {
        self.plugin = plugin
        self.database = database
        self.active = active
    }
}

public struct SubscriptionState: Sendable, Equatable {
    public var enabled: Bool
    public var slotName: String?
    public var publications: [String]
    /// nil when mmlite's role may not read `subconninfo`.
    public var conninfo: String?
    /// `suborigin` (PostgreSQL 16+): "any" or "none"; nil before 16.
    public var origin: String?
    /// Tables the subscription knows (`pg_subscription_rel`).
    public var tables: Set<QualifiedName>
    public var oid: String? = nil
    /// The apply worker (not the table-sync workers).
    public var workerPID: Int? = nil
    /// Running workers of the subscription, table-sync workers included.
    public var workers: Int = 0
    /// The apply worker's `received_lsn`.
    public var receivedLSN: LSN? = nil
    /// `pg_stat_subscription_stats` (15+); nil before.
    public var applyErrors: Int64? = nil
    public var syncErrors: Int64? = nil
    /// `subskiplsn` (15+); nil when none is set.
    public var skipLSN: LSN? = nil
    /// How far the subscriber has applied (its origin's remote_lsn), when read.
    public var appliedUpTo: LSN? = nil

    public init(enabled: Bool = true, slotName: String?, publications: [String], conninfo: String? = nil,
                origin: String? = nil, tables: Set<QualifiedName> = []) {
        self.enabled = enabled
        self.slotName = slotName
        self.publications = publications
        self.conninfo = conninfo
        self.origin = origin
        self.tables = tables
    }
}

/// How one directed link filters replicated changes so they do not echo.
public enum LinkFilter: String, Sendable, Equatable, Codable {
    /// The publisher's slot uses the mmlite output plugin.
    case mmlite
    /// Plain pgoutput; the subscription asks for `origin = none` (16+ both ends).
    case originNone = "origin-none"

    public var slotPlugin: String { self == .mmlite ? "mmlite" : "pgoutput" }

    /// The filter for publisher → subscriber under `mode`.
    public static func choose(_ mode: FilterMode, publisher: ServerCapabilities, subscriber: ServerCapabilities) throws -> LinkFilter {
        switch mode {
        case .mmlite:
            return .mmlite
        case .auto:
            return publisher.originNone && subscriber.originNone ? .originNone : .mmlite
        case .originNone:
            guard publisher.originNone, subscriber.originNone else {
                throw PlanError(message: "filter = \"origin-none\" needs PostgreSQL 16 or later on both ends of every link (a PostgreSQL \(min(publisher.major, subscriber.major)) node ignores or cannot request it); use filter = \"auto\" or \"mmlite\"")
            }
            return .originNone
        }
    }

    public static func choose(_ mode: FilterMode, publisherMajor: Int, subscriberMajor: Int) throws -> LinkFilter {
        try choose(mode, publisher: ServerCapabilities(major: publisherMajor), subscriber: ServerCapabilities(major: subscriberMajor))
    }
}

public struct PlanError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}
