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
    public static func links(of nodes: [String]) -> [Link] { MeshView.links(of: nodes) }

    /// The filter of a link between two observed nodes (see `MeshView.filter`).
    public func filter(for link: Link, states: [String: NodeState]) throws -> LinkFilter {
        guard let filter = try MeshView(config: config, states: states).filter(for: link) else {
            throw PlanError(message: "no observed state for \(states[link.publisher] == nil ? link.publisher : link.subscriber)")
        }
        return filter
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
                    publicationSteps.append(Step(node: name, action: .addTables(publication: publication, tables: missing)))
                }
                if !extra.isEmpty {
                    publicationSteps.append(Step(node: name, action: .dropTables(publication: publication, tables: extra)))
                }
            } else {
                publicationSteps.append(Step(node: name, action: .createPublication(publication: publication, tables: tables)))
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
                slotSteps.append(Step(node: link.publisher, action: .createSlot(slot: slotName, filter: filter, subscriber: link.subscriber)))
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
                    subscriptionSteps.append(Step(node: link.subscriber, action: .setSubscriptionConnection(
                        subscription: subscriptionName, publisher: link.publisher, peerDSN: peerDSN)))
                }
                if filter == .originNone, subscription.origin != "none",
                   existingSlot.map({ $0.plugin != "mmlite" }) ?? true {
                    subscriptionSteps.append(Step(node: link.subscriber, action: .setSubscriptionOrigin(
                        subscription: subscriptionName, publisher: link.publisher)))
                }
                if subscription.tables != desired && publisher.publication?.allTables != true {
                    subscriptionSteps.append(Step(node: link.subscriber, action: .refreshSubscription(subscription: subscriptionName)))
                }
            } else {
                subscriptionSteps.append(Step(node: link.subscriber, action: .createSubscription(
                    subscription: subscriptionName, publisher: link.publisher, peerDSN: peerDSN,
                    publication: publication, slot: slotName, filter: filter)))
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
        // Sequence offsets first: a node's keys are its own before any change travels.
        let sequenceSteps = try SequencePlanner(config: config).steps(states: states, members: nodeNames)
        return Plan(steps: sequenceSteps + publicationSteps + slotSteps + subscriptionSteps, notes: notes)
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
