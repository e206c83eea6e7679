/// What `apply` (and the wiring of `join`) does to one node, as a value: the
/// SQL, the text shown and the probes it needs are all derived from it, so
/// nothing ever reads a statement back.
public enum PlanAction: Sendable, Equatable {
    case createPublication(publication: String, tables: [QualifiedName])
    case addTables(publication: String, tables: [QualifiedName])
    /// Tables no longer in the config.
    case dropTables(publication: String, tables: [QualifiedName])
    /// On a publisher, the slot `subscriber` reads, with the plugin of `filter`.
    case createSlot(slot: String, filter: LinkFilter, subscriber: String)
    /// On a subscriber: reads `publisher`'s publication on an existing slot, without initial copy.
    case createSubscription(subscription: String, publisher: String, peerDSN: String, publication: String, slot: String, filter: LinkFilter)
    case refreshSubscription(subscription: String)
    case setSubscriptionConnection(subscription: String, publisher: String, peerDSN: String)
    case setSubscriptionOrigin(subscription: String, publisher: String)
    /// Conflict-handling objects for opted-in tables (see `ConflictPlanner`): generated SQL.
    case installConflicts(sql: String, summary: String)
    /// `mmlite.sequence_offsets` of the mesh (all of `offsets`), and the functions that know `own` (docs/sequences.md).
    case recordSequenceOffsets(mesh: String, offsets: [SequenceOffset], own: Int)
    /// Makes `sequence` draw from the node's class.
    case convertSequence(sequence: QualifiedName, columns: [String], step: Int, offset: Int, restart: Int64)
}

/// One statement mmlite runs on one node.
public struct Step: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable, Equatable {
        case createPublication, addTables, dropTables, createSlot, createSubscription
        case refreshSubscription, setSubscriptionConnection, setSubscriptionOrigin
        case installConflicts
        case recordSequenceOffsets, convertSequence
    }

    public var node: String
    public var action: PlanAction

    public init(node: String, action: PlanAction) {
        self.node = node
        self.action = action
    }

    public var kind: Kind {
        switch action {
        case .createPublication: return .createPublication
        case .addTables: return .addTables
        case .dropTables: return .dropTables
        case .createSlot: return .createSlot
        case .createSubscription: return .createSubscription
        case .refreshSubscription: return .refreshSubscription
        case .setSubscriptionConnection: return .setSubscriptionConnection
        case .setSubscriptionOrigin: return .setSubscriptionOrigin
        case .installConflicts: return .installConflicts
        case .recordSequenceOffsets: return .recordSequenceOffsets
        case .convertSequence: return .convertSequence
        }
    }

    /// The exact statement (may carry a password from a peer_dsn).
    public var sql: String { render(dsn: { $0 }) }

    /// The statement with passwords masked: what is printed.
    public var displaySQL: String { render(dsn: DSN.masked) }

    private func render(dsn: (String) -> String) -> String {
        func list(_ tables: [QualifiedName]) -> String { tables.map(\.sql).joined(separator: ", ") }
        switch action {
        case .createPublication(let publication, let tables):
            return tables.isEmpty ? "CREATE PUBLICATION \(SQL.identifier(publication))"
                : "CREATE PUBLICATION \(SQL.identifier(publication)) FOR TABLE \(list(tables))"
        case .addTables(let publication, let tables):
            return "ALTER PUBLICATION \(SQL.identifier(publication)) ADD TABLE \(list(tables))"
        case .dropTables(let publication, let tables):
            return "ALTER PUBLICATION \(SQL.identifier(publication)) DROP TABLE \(list(tables))"
        case .createSlot(let slot, let filter, _):
            return "SELECT pg_create_logical_replication_slot(\(SQL.literal(slot)), \(SQL.literal(filter.slotPlugin)))"
        case .createSubscription(let subscription, _, let peerDSN, let publication, let slot, let filter):
            var options = ["create_slot = false", "slot_name = \(SQL.literal(slot))", "copy_data = false"]
            if filter == .originNone { options.append("origin = none") }
            return "CREATE SUBSCRIPTION \(SQL.identifier(subscription)) CONNECTION \(SQL.literal(dsn(peerDSN)))"
                + " PUBLICATION \(SQL.identifier(publication)) WITH (\(options.joined(separator: ", ")))"
        case .refreshSubscription(let subscription):
            return "ALTER SUBSCRIPTION \(SQL.identifier(subscription)) REFRESH PUBLICATION WITH (copy_data = false)"
        case .setSubscriptionConnection(let subscription, _, let peerDSN):
            return "ALTER SUBSCRIPTION \(SQL.identifier(subscription)) CONNECTION \(SQL.literal(dsn(peerDSN)))"
        case .setSubscriptionOrigin(let subscription, _):
            return "ALTER SUBSCRIPTION \(SQL.identifier(subscription)) SET (origin = none)"
        case .installConflicts(let sql, _):
            return sql
        case .recordSequenceOffsets(let mesh, let offsets, let own):
            return SequenceSQL.recordOffsets(mesh: mesh, offsets: offsets, own: own)
        case .convertSequence(let sequence, _, let step, _, let restart):
            return SequenceSQL.convert(sequence, step: step, restart: restart)
        }
    }

    public var summary: String {
        switch action {
        case .createPublication(let publication, let tables):
            return "create publication \(publication) for \(tables.count) table\(tables.count == 1 ? "" : "s")"
        case .addTables(let publication, let tables):
            return "add \(tables.map(\.sql).joined(separator: ", ")) to publication \(publication)"
        case .dropTables(let publication, let tables):
            return "remove \(tables.map(\.sql).joined(separator: ", ")) (no longer in the config) from publication \(publication)"
        case .createSlot(let slot, let filter, let subscriber):
            return "create slot \(slot) (plugin \(filter.slotPlugin)) for \(subscriber)"
        case .createSubscription(_, let publisher, _, _, _, let filter):
            return "subscribe to \(publisher) (filter \(filter.rawValue))"
        case .refreshSubscription(let subscription):
            return "refresh subscription \(subscription) to the publication's tables"
        case .setSubscriptionConnection(let subscription, let publisher, _):
            return "point subscription \(subscription) at \(publisher)'s peer_dsn"
        case .setSubscriptionOrigin(let subscription, let publisher):
            return "make subscription \(subscription) receive only \(publisher)'s own changes"
        case .installConflicts(_, let summary):
            return summary
        case .recordSequenceOffsets(_, let offsets, let own):
            let list = offsets.map { "\($0.node)=\($0.offset)\($0.retired ? " (retired)" : "")" }.joined(separator: ", ")
            return "record sequence offsets (\(list)); this node's is \(own)"
        case .convertSequence(let sequence, let columns, let step, let offset, let restart):
            return "make \(sequence.sql) (\(columns.joined(separator: ", "))) hand out \(restart), \(restart &+ Int64(step)), ... (offset \(offset) of \(step))"
        }
    }

    /// The link whose peer_dsn this step makes the subscriber use (to probe it first).
    public var usesPeerLink: Link? {
        switch action {
        case .createSubscription(_, let publisher, _, _, _, _), .setSubscriptionConnection(_, let publisher, _):
            return Link(publisher: publisher, subscriber: node)
        default:
            return nil
        }
    }

    /// Whether this step loads the mmlite output plugin on its node (to probe it first).
    public var loadsPlugin: Bool {
        if case .createSlot(_, .mmlite, _) = action { return true }
        return false
    }

    public var description: String { "[\(node)] \(displaySQL)" }
}

public struct Plan: Sendable, Equatable {
    /// In execution order: publications, then slots, then subscriptions.
    public var steps: [Step]
    /// Things worth telling that apply does not change.
    public var notes: [String]

    public var isEmpty: Bool { steps.isEmpty }

    public init(steps: [Step], notes: [String] = []) {
        self.steps = steps
        self.notes = notes
    }
}

/// A directed link of the mesh: `subscriber` reads `publisher`'s changes.
public struct Link: Sendable, Equatable, Hashable {
    public var publisher: String
    public var subscriber: String
    public init(publisher: String, subscriber: String) {
        self.publisher = publisher
        self.subscriber = subscriber
    }
}
