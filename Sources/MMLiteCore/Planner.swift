/// One statement mmlite runs on one node.
public struct Step: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable, Equatable {
        case createPublication, addTables, dropTables, createSlot, createSubscription
        case refreshSubscription, setSubscriptionConnection, setSubscriptionOrigin
        /// Conflict-handling objects for opted-in tables (issue 6, Conflict.swift).
        case installConflicts
    }

    public var node: String
    public var kind: Kind
    /// The exact statement (may carry a password from a peer_dsn).
    public var sql: String
    /// The statement with passwords masked: what is printed.
    public var displaySQL: String
    public var summary: String

    public init(node: String, kind: Kind, sql: String, displaySQL: String? = nil, summary: String) {
        self.node = node
        self.kind = kind
        self.sql = sql
        self.displaySQL = displaySQL ?? sql
        self.summary = summary
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

/// The directed links of a mesh and their filter.
public struct Link: Sendable, Equatable, Hashable {
    public var publisher: String
    public var subscriber: String
    public init(publisher: String, subscriber: String) {
        self.publisher = publisher
        self.subscriber = subscriber
    }
}

/// Computes what to run so the observed nodes form the full mesh the config
/// describes. Pure: the same input gives the same plan, and the plan for a
/// state that already matches is empty.
public struct Planner: Sendable {
    public var config: MeshConfig
    /// The concrete tables (wildcards resolved) the mesh replicates.
    public var tables: [QualifiedName]

    public init(config: MeshConfig, tables: [QualifiedName]) {
        self.config = config
        self.tables = tables.sorted()
    }

    public var names: ObjectNames { config.names }

    /// Every ordered pair of distinct nodes, in config order.
    public static func links(of nodes: [String]) -> [Link] {
        nodes.flatMap { publisher in
            nodes.filter { $0 != publisher }.map { Link(publisher: publisher, subscriber: $0) }
        }
    }

    public func filter(for link: Link, states: [String: NodeState]) throws -> LinkFilter {
        try LinkFilter.choose(config.mesh.filter,
                              publisherMajor: states[link.publisher]?.major ?? 0,
                              subscriberMajor: states[link.subscriber]?.major ?? 0)
    }

    /// The plan. `states` must hold every configured node. The mesh is built
    /// over `members` (default: `Membership.members`, which leaves out
    /// configured nodes that have not joined a running mesh; `join` adds them).
    public func plan(states: [String: NodeState], members: [String]? = nil) throws -> Plan {
        let configured = config.nodes.map(\.name)
        for name in configured where states[name] == nil {
            throw PlanError(message: "no observed state for node \(name)")
        }
        let nodeNames = members ?? Membership.members(config: config, states: states)
        var publicationSteps: [Step] = []
        var slotSteps: [Step] = []
        var subscriptionSteps: [Step] = []
        var notes: [String] = []
        for name in configured where !nodeNames.contains(name) {
            let source = nodeNames.first.map { " --from \($0)" } ?? ""
            notes.append("\(name) has not joined the mesh (no publication \(names.publication) on it); apply leaves it out. Add it with its data: mmlite join \(name)\(source)")
        }
        let desired = Set(tables)
        let publication = names.publication

        // 1. Publications.
        for name in nodeNames {
            guard let state = states[name] else { continue }
            if let existing = state.publication {
                if existing.allTables {
                    notes.append("\(name): publication \(publication) is FOR ALL TABLES; mmlite leaves its table list alone")
                    continue
                }
                let missing = desired.subtracting(existing.tables).sorted()
                let extra = existing.tables.subtracting(desired).sorted()
                if !missing.isEmpty {
                    publicationSteps.append(Step(
                        node: name, kind: .addTables,
                        sql: "ALTER PUBLICATION \(SQL.identifier(publication)) ADD TABLE \(missing.map(\.sql).joined(separator: ", "))",
                        summary: "add \(missing.map(\.sql).joined(separator: ", ")) to publication \(publication)"))
                }
                if !extra.isEmpty {
                    publicationSteps.append(Step(
                        node: name, kind: .dropTables,
                        sql: "ALTER PUBLICATION \(SQL.identifier(publication)) DROP TABLE \(extra.map(\.sql).joined(separator: ", "))",
                        summary: "remove \(extra.map(\.sql).joined(separator: ", ")) (no longer in the config) from publication \(publication)"))
                }
            } else {
                let list = tables.map(\.sql).joined(separator: ", ")
                publicationSteps.append(Step(
                    node: name, kind: .createPublication,
                    sql: tables.isEmpty ? "CREATE PUBLICATION \(SQL.identifier(publication))"
                        : "CREATE PUBLICATION \(SQL.identifier(publication)) FOR TABLE \(list)",
                    summary: "create publication \(publication) for \(tables.count) table\(tables.count == 1 ? "" : "s")"))
            }
        }

        // 2. Slots, 3. subscriptions.
        for link in Self.links(of: nodeNames) {
            guard let publisher = states[link.publisher], let subscriber = states[link.subscriber],
                  let publisherConfig = config.node(named: link.publisher) else { continue }
            let filter = try self.filter(for: link, states: states)
            let slotName = names.slot(subscriber: link.subscriber)
            let subscriptionName = names.subscription(publisher: link.publisher)
            let existingSlot = publisher.slots[slotName]
            let existingSubscription = subscriber.subscriptions[subscriptionName]

            if let slot = existingSlot {
                if slot.plugin != filter.slotPlugin {
                    if slot.plugin == "mmlite" {
                        notes.append("\(link.publisher): slot \(slotName) uses the mmlite plugin where \(filter.rawValue) would be chosen now; it filters correctly, so it is kept")
                    } else if filter == .mmlite {
                        throw PlanError(message: "\(link.publisher): slot \(slotName) uses plugin \(slot.plugin), which does not filter replicated changes for \(link.subscriber) (PostgreSQL \(subscriber.major)); drop the link and re-run apply (SELECT pg_drop_replication_slot('\(slotName)') on \(link.publisher) after DROP SUBSCRIPTION \(subscriptionName) on \(link.subscriber))")
                    }
                }
            } else {
                slotSteps.append(Step(
                    node: link.publisher, kind: .createSlot,
                    sql: "SELECT pg_create_logical_replication_slot(\(SQL.literal(slotName)), \(SQL.literal(filter.slotPlugin)))",
                    summary: "create slot \(slotName) (plugin \(filter.slotPlugin)) for \(link.subscriber)"))
                if existingSubscription != nil {
                    notes.append("\(link.publisher): slot \(slotName) was missing while \(link.subscriber) already subscribes; changes made on \(link.publisher) before it is re-created do not reach \(link.subscriber)")
                }
            }

            let peerDSN = publisherConfig.effectivePeerDSN
            if let subscription = existingSubscription {
                if !subscription.enabled {
                    notes.append("\(link.subscriber): subscription \(subscriptionName) is disabled; apply leaves it so (ALTER SUBSCRIPTION \(subscriptionName) ENABLE to resume)")
                }
                if let conninfo = subscription.conninfo, conninfo != peerDSN {
                    subscriptionSteps.append(Step(
                        node: link.subscriber, kind: .setSubscriptionConnection,
                        sql: "ALTER SUBSCRIPTION \(SQL.identifier(subscriptionName)) CONNECTION \(SQL.literal(peerDSN))",
                        displaySQL: "ALTER SUBSCRIPTION \(SQL.identifier(subscriptionName)) CONNECTION \(SQL.literal(DSN.masked(peerDSN)))",
                        summary: "point subscription \(subscriptionName) at \(link.publisher)'s peer_dsn"))
                }
                if filter == .originNone, subscription.origin != "none",
                   existingSlot.map({ $0.plugin != "mmlite" }) ?? true {
                    subscriptionSteps.append(Step(
                        node: link.subscriber, kind: .setSubscriptionOrigin,
                        sql: "ALTER SUBSCRIPTION \(SQL.identifier(subscriptionName)) SET (origin = none)",
                        summary: "make subscription \(subscriptionName) receive only \(link.publisher)'s own changes"))
                }
                if subscription.tables != desired && publisher.publication?.allTables != true {
                    subscriptionSteps.append(Step(
                        node: link.subscriber, kind: .refreshSubscription,
                        sql: "ALTER SUBSCRIPTION \(SQL.identifier(subscriptionName)) REFRESH PUBLICATION WITH (copy_data = false)",
                        summary: "refresh subscription \(subscriptionName) to the publication's tables"))
                }
            } else {
                var options = ["create_slot = false", "slot_name = \(SQL.literal(slotName))", "copy_data = false"]
                if filter == .originNone { options.append("origin = none") }
                let head = "CREATE SUBSCRIPTION \(SQL.identifier(subscriptionName)) CONNECTION "
                let tail = " PUBLICATION \(SQL.identifier(publication)) WITH (\(options.joined(separator: ", ")))"
                subscriptionSteps.append(Step(
                    node: link.subscriber, kind: .createSubscription,
                    sql: head + SQL.literal(peerDSN) + tail,
                    displaySQL: head + SQL.literal(DSN.masked(peerDSN)) + tail,
                    summary: "subscribe to \(link.publisher) (filter \(filter.rawValue))"))
            }
        }

        // Objects of this mesh for nodes no longer in the config (part is a separate command).
        for name in nodeNames {
            guard let state = states[name] else { continue }
            for slot in state.slots.keys.sorted() {
                if let subscriber = names.subscriber(ofSlot: slot), !configured.contains(subscriber) {
                    notes.append("\(name): slot \(slot) is for \(subscriber), which is not in the config; it retains WAL until dropped (mmlite part)")
                }
            }
            for subscription in state.subscriptions.keys.sorted() {
                if let publisher = names.publisher(ofSubscription: subscription), !configured.contains(publisher) {
                    notes.append("\(name): subscription \(subscription) reads from \(publisher), which is not in the config")
                }
            }
        }
        return Plan(steps: publicationSteps + slotSteps + subscriptionSteps, notes: notes)
    }
}

/// Resolves `mesh.tables` (with `schema.*`) against the tables that exist on
/// the nodes. A table counts when it exists on at least one node; the checks
/// report tables missing on others.
public func resolveTables(_ patterns: [TablePattern], existing: [Set<QualifiedName>]) -> (tables: [QualifiedName], unmatched: [TablePattern]) {
    let all = existing.reduce(into: Set<QualifiedName>()) { $0.formUnion($1) }
    var result = Set<QualifiedName>()
    var unmatched: [TablePattern] = []
    for pattern in patterns {
        switch pattern {
        case .table(let name):
            result.insert(name)
        case .allTables:
            let matched = all.filter { pattern.matches($0) }
            if matched.isEmpty { unmatched.append(pattern) }
            result.formUnion(matched)
        }
    }
    return (result.sorted(), unmatched)
}
