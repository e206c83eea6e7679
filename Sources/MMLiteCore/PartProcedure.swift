/// `mmlite part NODE [--force]` as a state machine (see `JoinProcedure` for
/// how runner and machine talk).
///
/// Phases: observe → [cut, NODE reachable and no --force] take the tables out
/// of NODE's publication, wait until the transactions running then have ended
/// and every other node has applied NODE up to its current position →
/// the others stop reading NODE (note how far each got) and drop their
/// subscriptions from it → NODE's own subscriptions, slots, publication and
/// copy marker → the others' slots for NODE → report. Every step looks at what
/// exists, so a re-run finishes an interrupted part.
public struct PartProcedure: Sendable {
    public struct Request: Sendable {
        public var config: MeshConfig
        public var configPath: String
        public var node: String
        public var force: Bool
        public var timeout: Double

        public init(config: MeshConfig, configPath: String, node: String, force: Bool = false, timeout: Double = 300) {
            self.config = config
            self.configPath = configPath
            self.node = node
            self.force = force
            self.timeout = timeout
        }
    }

    public struct Observation: Sendable {
        /// This mesh's objects on every reachable node.
        public var states: [String: NodeState]
        /// Unreachable nodes and why (masked).
        public var unreachable: [String: String]

        public init(states: [String: NodeState], unreachable: [String: String] = [:]) {
            self.states = states
            self.unreachable = unreachable
        }
    }

    public enum Action: Sendable, Equatable {
        case observe
        case say(String)
        case startClock(String)
        case sayElapsed(String, clock: String)
        case removeTables(node: String, publication: String, tables: [QualifiedName])
        /// Answer: `.horizon`.
        case readTransactionHorizon(node: String)
        /// Answer: `.position`.
        case readCurrentPosition(node: String)
        case wait(WaitCondition)
        case disableSubscription(node: String, subscription: String)
        /// Answer: `.position`.
        case readAppliedPosition(node: String, subscription: String)
        /// Without touching the remote slot (mmlite drops slots itself, also when the publisher is down).
        case dropSubscription(node: String, subscription: String, disable: Bool)
        case dropSlot(node: String, slot: String)
        case dropPublication(node: String, publication: String)
        case dropOrigin(node: String, origin: String)
        /// Marks NODE's sequence offset retired on `node`, so it is never handed out again.
        case retireSequenceOffset(node: String, mesh: String, parted: String)
        case finish(ProcedureOutcome)
    }

    public enum Event: Sendable {
        case observed(Observation)
        case done
        case position(Position?)
        case horizon(String?)
        case timedOut(String)
        case failed(String)
    }

    enum Stage: Sendable, Equatable {
        case start, observing, cutting, waitingForTransactions, catchingUp, unsubscribing, ownObjects, othersSlots, finished
    }

    public let request: Request
    var stage = Stage.start
    var queue: [Action] = []
    var last: Action = .observe
    var observation: Observation?
    var end: Position?
    /// How far each other node had applied NODE when it stopped reading it.
    public private(set) var reached: [(node: String, position: Position?)] = []
    public private(set) var changed = false

    public init(_ request: Request) { self.request = request }

    var node: String { request.node }
    var names: ObjectNames { request.config.names }
    var others: [String] { request.config.nodes.map(\.name).filter { $0 != node } }
    var subscriptionFromNode: String { names.subscription(publisher: node) }
    var slotForNode: String { names.slot(subscriber: node) }
    var target: NodeState? { observation?.states[node] }
    var reachesNode: Bool { target != nil }

    /// Others that read NODE (they have its subscription).
    var readers: [String] { others.filter { observation?.states[$0]?.subscriptions[subscriptionFromNode] != nil } }

    public mutating func start() -> Action {
        stage = .observing
        return emit(.observe)
    }

    public mutating func next(_ event: Event) -> Action {
        switch event {
        case .failed(let message):
            return emit(stop(message))
        case .timedOut(let left):
            guard case .wait(let condition) = last else { return emit(stop("timed out (\(left))")) }
            if case .slotConfirmed(_, let slot, let goal, _) = condition, let reader = names.subscriber(ofSlot: slot) {
                return emit(stop("\(reader) has not applied \(node)'s changes up to \(goal) after \(Int(request.timeout)) s (\(left)); nothing was dropped. Look at `mmlite status`, or use --force to drop anyway"))
            }
            return emit(stop("timed out waiting for \(condition.what)"))
        default:
            if let action = record(event) { return emit(action) }
            while queue.isEmpty {
                if let action = advance() { return emit(action) }
            }
            return emit(queue.removeFirst())
        }
    }

    mutating func emit(_ action: Action) -> Action {
        last = action
        if case .finish = action { stage = .finished; queue = [] }
        return action
    }

    func stop(_ message: String) -> Action {
        var lines = ["mmlite part: \(message)"]
        if changed {
            lines.append("part stopped part-way. Fix the cause, then run `mmlite part \(node)\(request.force ? " --force" : "")` again: it continues from what exists.")
        }
        return .finish(.stopped(lines: lines, changed: changed))
    }

    mutating func record(_ event: Event) -> Action? {
        switch (last, event) {
        case (.observe, .observed(let observed)):
            observation = observed
            return refusal()
        case (.readTransactionHorizon, .horizon(let horizon)):
            if let horizon { queue.insert(.wait(.transactionsEnded(node: node, horizon: horizon)), at: 0) }
        case (.readCurrentPosition, .position(let position)):
            end = position ?? .lsn(.zero)
        case (.readAppliedPosition(let other, _), .position(let position)):
            reached.append((other, position))
        case (.removeTables, .done), (.dropSubscription, .done), (.dropSlot, .done), (.dropPublication, .done):
            changed = true
        default:
            break
        }
        return nil
    }

    func refusal() -> Action? {
        guard let observed = observation else { return nil }
        let unreachableOthers = others.filter { observed.unreachable[$0] != nil }
        if !unreachableOthers.isEmpty {
            return .finish(.refused(.unreachable, lines: unreachableOthers.map { "mmlite: cannot connect to \($0): \(observed.unreachable[$0] ?? "")" }
                + ["Nothing was changed. Every other node must be reachable to remove \(node)'s objects from it; part them first (`mmlite part NODE --force`) if they are gone."]))
        }
        if !reachesNode && !request.force {
            return .finish(.refused(.unreachable, lines: [
                "mmlite part: cannot connect to \(node): \(observed.unreachable[node] ?? "")",
                "Nothing was changed. If \(node) is gone for good, `mmlite part \(node) --force` drops the other nodes' slots and subscriptions for it; changes it committed that did not reach them are then lost."]))
        }
        return nil
    }

    mutating func advance() -> Action? {
        switch stage {
        case .start:
            stage = .observing
            queue = [.observe]
        case .observing:
            stage = .cutting
            if reachesNode && !request.force { cut() }
        case .cutting:
            stage = .waitingForTransactions
            if reachesNode && !request.force { queue = [.readCurrentPosition(node: node)] }
        case .waitingForTransactions:
            stage = .catchingUp
            if let end { catchUp(to: end) }
        case .catchingUp:
            stage = .unsubscribing
            for other in readers {
                queue += [.disableSubscription(node: other, subscription: subscriptionFromNode),
                          .wait(.workerStopped(node: other, subscription: subscriptionFromNode))]
                // Only --force reports how far each got (and the read needs
                // EXECUTE on pg_replication_origin_progress, not granted by default).
                if request.force { queue.append(.readAppliedPosition(node: other, subscription: subscriptionFromNode)) }
                queue += [.dropSubscription(node: other, subscription: subscriptionFromNode, disable: false),
                          .say("\(other): dropped subscription \(subscriptionFromNode)")]
            }
        case .unsubscribing:
            stage = .ownObjects
            if let target { dropOwnObjects(target) }
        case .ownObjects:
            stage = .othersSlots
            for other in others where observation?.states[other]?.slots[slotForNode] != nil {
                dropSlot(slotForNode, on: other)
            }
        case .othersSlots:
            stage = .finished
            retireOffset()
            queue += report().map { .say($0) }
        case .finished:
            return .finish(.done)
        }
        return nil
    }

    /// Makes every other node end with the same set of NODE's transactions:
    /// logical decoding publishes a transaction whose first change comes
    /// after the tables left the publication to nobody; once the
    /// transactions running at the cut have ended and each peer confirmed the
    /// WAL position after that, they all hold exactly NODE's transactions up
    /// to the cut (without it, each would stop at a different point).
    mutating func cut() {
        if let publication = target?.publication, !publication.allTables, !publication.tables.isEmpty {
            queue += [.removeTables(node: node, publication: names.publication, tables: publication.tables.sorted()),
                      .say("\(node): took the tables out of publication \(names.publication): what \(node) commits from now on stays on \(node)")]
        }
        queue.append(.readTransactionHorizon(node: node))
    }

    mutating func catchUp(to end: Position) {
        queue.append(.say("Waiting until every node has applied \(node)'s changes up to \(end):"))
        for other in others {
            let slot = names.slot(subscriber: other)
            guard readers.contains(other), target?.slots[slot] != nil else {
                queue.append(.say("  \(other): does not subscribe to \(node)"))
                continue
            }
            queue += [.startClock(other),
                      .wait(.slotConfirmed(node: node, slot: slot, target: end, what: "\(other) applied \(node)'s changes up to \(end)")),
                      .sayElapsed("  \(other): done (%@ s)", clock: other)]
        }
    }

    mutating func dropOwnObjects(_ state: NodeState) {
        for name in state.subscriptions.keys.sorted() where names.publisher(ofSubscription: name) != nil {
            queue += [.dropSubscription(node: node, subscription: name, disable: true), .say("\(node): dropped subscription \(name)")]
        }
        for slot in state.slots.keys.sorted() { dropSlot(slot, on: node) }
        if state.publication != nil {
            queue += [.dropPublication(node: node, publication: names.publication), .say("\(node): dropped publication \(names.publication)")]
        }
        queue.append(.dropOrigin(node: node, origin: names.joinOrigin))
    }

    /// Once no walsender uses it (its subscriber was just dropped or is down).
    mutating func dropSlot(_ slot: String, on name: String) {
        queue += [.wait(.slotInactive(node: name, slot: slot)), .dropSlot(node: name, slot: slot), .say("\(name): dropped slot \(slot)")]
    }

    /// On every reachable node that records NODE's offset in use (NODE included).
    mutating func retireOffset() {
        let holders = ([node] + others).filter { holder in
            observation?.states[holder]?.sequenceOffsets?.contains { $0.node == node && !$0.retired } == true
        }
        let parted = node, states = observation?.states ?? [:]
        guard let offset = holders.compactMap({ states[$0]?.sequenceOffsets.flatMap { SequencePlanner.offset(of: parted, in: $0) } }).first
        else { return }
        queue += holders.map { .retireSequenceOffset(node: $0, mesh: request.config.mesh.name, parted: node) }
        queue.append(.say("Retired \(node)'s sequence offset \(offset) on \(holders.joined(separator: ", ")): it is never handed out again."))
    }

    func report() -> [String] {
        var lines = [""]
        if request.force {
            if reached.isEmpty {
                lines.append("No node subscribed to \(node).")
            } else {
                lines.append("How far each node had applied \(node)'s changes when it stopped reading them:")
                for (other, position) in reached {
                    lines.append("  \(other): up to \(node)'s WAL position \(position?.description ?? "nothing applied")")
                }
                let lowest = reached.compactMap { $0.position?.lsn }.min()
                lines.append("Changes \(node) committed after \(lowest?.description ?? "0/0") may never have left it, or reached only some nodes (which then differ in those rows).")
                if !reachesNode { lines.append("If \(node)'s data directory still exists, compare those rows by hand before reusing it.") }
            }
        }
        lines.append("Done: \(node) is no longer part of mesh \"\(request.config.mesh.name)\". Remove it from \(request.configPath) (apply otherwise reports it as not joined; `mmlite join` adds it again).")
        return lines
    }
}

extension PartProcedure.Action {
    /// The statements the action runs (empty for reads, waits and bookkeeping).
    public var statements: [ShownStatement] {
        switch self {
        case .removeTables(let node, let publication, let tables):
            return [ShownStatement(node, "ALTER PUBLICATION \(SQL.identifier(publication)) DROP TABLE \(tables.map(\.sql).joined(separator: ", "))")]
        case .disableSubscription(let node, let subscription):
            return [ShownStatement(node, JoinSQL.disableSubscription(subscription))]
        case .dropSubscription(let node, let subscription, let disable):
            return JoinSQL.dropSubscription(subscription).dropFirst(disable ? 0 : 1).map { ShownStatement(node, $0) }
        case .dropSlot(let node, let slot):
            return [ShownStatement(node, JoinSQL.dropSlotIfExists(slot))]
        case .dropPublication(let node, let publication):
            return [ShownStatement(node, "DROP PUBLICATION \(SQL.identifier(publication))")]
        case .dropOrigin(let node, let origin):
            return [ShownStatement(node, JoinSQL.dropOrigin(origin))]
        case .retireSequenceOffset(let node, let mesh, let parted):
            return [ShownStatement(node, SequenceSQL.retire(mesh: mesh, node: parted))]
        case .observe, .say, .startClock, .sayElapsed, .readTransactionHorizon, .readCurrentPosition, .wait, .readAppliedPosition, .finish:
            return []
        }
    }
}
