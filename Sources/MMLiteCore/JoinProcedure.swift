/// `mmlite join NODE --from SOURCE` as a state machine (see docs/operations.md
/// for why each phase is needed). The runner starts it, performs each action
/// and answers with what happened; the machine decides everything else:
/// refusals, what to resume after an interruption, the SQL, the messages.
///
/// Phases: observe → (create the schema) → conflict objects on NODE → checks →
/// [1] the members' slots for NODE → [2] SOURCE catches up to them →
/// [3] pause SOURCE's subscriptions, read how far it applied each member,
/// export a snapshot (resume) → [4] advance the members' slots to those
/// positions → [5] copy in the snapshot → [6] wire NODE in → [7] wait until
/// NODE caught up; drop the copy marker. A re-run observes where it stands:
/// a committed copy (the marker origin has progress) resumes at the wiring,
/// existing member slots are reused, a stale SOURCE slot is dropped.
public struct JoinProcedure: Sendable {
    public struct Request: Sendable {
        public var config: MeshConfig
        public var configPath: String
        public var node: String
        public var source: String
        public var copySchema: Bool
        public var force: Bool
        public var dryRun: Bool
        public var timeout: Double

        public init(config: MeshConfig, configPath: String, node: String, source: String, copySchema: Bool = false,
                    force: Bool = false, dryRun: Bool = false, timeout: Double = 600) {
            self.config = config
            self.configPath = configPath
            self.node = node
            self.source = source
            self.copySchema = copySchema
            self.force = force
            self.dryRun = dryRun
            self.timeout = timeout
        }
    }

    /// What the runner observed of the mesh before the join changes anything.
    public struct Observation: Sendable {
        /// This mesh's objects on every reachable node.
        public var states: [String: NodeState]
        /// Unreachable nodes and why (masked).
        public var unreachable: [String: String]
        /// The mesh's tables (wildcards resolved).
        public var tables: [QualifiedName]
        /// Mesh tables that do not exist on NODE.
        public var missingOnNode: [QualifiedName]
        /// Mesh tables on NODE that hold rows.
        public var nonEmptyOnNode: [QualifiedName]
        /// Opted-in tables as the catalog describes them, and why some could not be described.
        public var conflictTables: [ConflictSQL.Table]
        public var conflictProblems: [String]
        /// `mmlite.conflict_tables` of each node that has it.
        public var conflictRegistries: [String: [String: String]]
        /// The progress of the copy marker origin on NODE: set once a copy committed.
        public var copyMark: LSN?

        public init(states: [String: NodeState], unreachable: [String: String] = [:], tables: [QualifiedName],
                    missingOnNode: [QualifiedName] = [], nonEmptyOnNode: [QualifiedName] = [],
                    conflictTables: [ConflictSQL.Table] = [], conflictProblems: [String] = [],
                    conflictRegistries: [String: [String: String]] = [:], copyMark: LSN? = nil) {
            self.states = states
            self.unreachable = unreachable
            self.tables = tables
            self.missingOnNode = missingOnNode
            self.nonEmptyOnNode = nonEmptyOnNode
            self.conflictTables = conflictTables
            self.conflictProblems = conflictProblems
            self.conflictRegistries = conflictRegistries
            self.copyMark = copyMark
        }
    }

    /// The copy of phase 5: every table in SOURCE's snapshot into NODE, in
    /// one transaction tagged with the marker origin, whose progress the
    /// commit sets to the consistent point.
    public struct Copy: Sendable, Equatable {
        public var source: String
        public var node: String
        /// Mesh tables, then the version tables of opted-in tables.
        public var tables: [QualifiedName]
        public var versionTables: [QualifiedName]
        /// Tables with rows that are emptied first (--force).
        public var emptied: [QualifiedName]
        public var origin: String
        public var snapshot: String
        public var consistentPoint: Position

        public init(source: String, node: String, tables: [QualifiedName], versionTables: [QualifiedName], emptied: [QualifiedName],
                    origin: String, snapshot: String, consistentPoint: Position) {
            self.source = source
            self.node = node
            self.tables = tables
            self.versionTables = versionTables
            self.emptied = emptied
            self.origin = origin
            self.snapshot = snapshot
            self.consistentPoint = consistentPoint
        }

        /// Emptied before the copy: --force tables and the version tables
        /// (conflict handling may have written them before the copy).
        public var truncated: [QualifiedName] { emptied + versionTables }
    }

    public enum Action: Sendable, Equatable {
        /// Connect to every node and read what `Observation` holds (read-only; also in a dry run).
        case observe
        /// Create `tables` on NODE from SOURCE's definitions (pg_dump --schema-only).
        case createSchema(tables: [QualifiedName], from: String, on: String)
        case run(Step)
        /// Run the probes, then every check (read-only; also in a dry run).
        case check(Probes)
        case beginPhase(Int, String)
        case endPhase(Int)
        case say(String)
        /// Start a named clock; `sayElapsed` prints the seconds since (format has one `%@`).
        case startClock(String)
        case sayElapsed(String, clock: String)
        case dropSlot(node: String, slot: String)
        /// Answer: `.position` (nil: no such slot).
        case readSlotPosition(node: String, slot: String)
        /// Answer: `.position` (its consistent point).
        case createSlot(node: String, slot: String, plugin: String)
        /// Answer: `.done`, or `.timedOut` after the request's timeout.
        case wait(WaitCondition)
        case disableSubscription(node: String, subscription: String)
        case enableSubscription(node: String, subscription: String)
        /// Answer: `.position`.
        case readAppliedPosition(node: String, subscription: String, peer: String)
        /// Over a replication connection the runner keeps open until `releaseSnapshot`. Answer: `.snapshot`.
        case exportSnapshot(node: String, slot: String, plugin: String, major: Int)
        case advanceSlot(node: String, slot: String, to: Position)
        case copy(Copy)
        case releaseSnapshot
        /// Read this mesh's objects on every node again. Answer: `.mesh`.
        case observeMesh
        /// Answer: `.position`.
        case readCurrentPosition(node: String)
        case dropOrigin(node: String, origin: String)
        case finish(ProcedureOutcome)
    }

    public enum Event: Sendable {
        case observed(Observation)
        case done
        case checked([CheckResult])
        case position(Position?)
        case snapshot(consistentPoint: Position, name: String)
        case mesh([String: NodeState])
        /// A wait ran out; what was left.
        case timedOut(String)
        /// The action failed (the message is masked).
        case failed(String)
    }

    enum Stage: Sendable, Equatable {
        case start, observing, creatingSchema, reobserving, checkingRights, installing, checking
        case droppingStale, peerSlots, sourceCatchUp, pause, resume, advance, copy, observingMesh, wiring, catchUp, finished
    }

    public let request: Request
    var stage = Stage.start
    var queue: [Action] = []
    var last: Action = .observe
    var observation: Observation?
    var schemaCreated: [QualifiedName] = []
    var members: [String] = []
    var conflictSteps: [Step] = []
    var copyDone = false
    var nonEmpty: [QualifiedName] = []
    var startPositions: [String: Position] = [:]
    var applied: [String: Position] = [:]
    var paused: [String] = []
    var consistentPoint: Position = .lsn(.zero)
    var snapshot = ""
    var meshStates: [String: NodeState] = [:]
    var catchUpTargets: [String: Position] = [:]
    var phaseNumber = 0
    /// Whether anything that a re-run must take into account was changed.
    public private(set) var changed = false
    /// Titles of the numbered phases started so far.
    public private(set) var phases: [String] = []

    public init(_ request: Request) { self.request = request }

    var node: String { request.node }
    var source: String { request.source }
    var names: ObjectNames { request.config.names }
    var view: MeshView { MeshView(config: request.config, states: observation?.states ?? [:]) }
    var others: [String] { members.filter { $0 != node } }
    /// Members other than SOURCE and NODE: the nodes whose changes SOURCE applies.
    var peers: [String] { members.filter { $0 != source && $0 != node } }
    var slotForNode: String { names.slot(subscriber: node) }
    var sourceSlot: String { names.slot(subscriber: node) }
    var tables: [QualifiedName] { observation?.tables ?? [] }
    /// The conflict-handling tables copied with the user's: version tables, and
    /// lives tables of tables with delta columns.
    var versionTables: [QualifiedName] {
        (observation?.conflictTables ?? []).flatMap { table in
            [ConflictSQL.versionTable(table.name)] + (table.deltaColumns.isEmpty ? [] : [ConflictSQL.livesTable(table.name)])
        }
    }

    /// The first action.
    public mutating func start() -> Action {
        stage = .observing
        return emit(.observe)
    }

    /// The next action, given what the last one did.
    public mutating func next(_ event: Event) -> Action {
        switch event {
        case .failed(let message):
            return failed(message)
        case .timedOut(let left):
            guard case .wait(let condition) = last else { return failed("timed out (\(left))") }
            return failed("timed out after \(Int(request.timeout)) s waiting for \(condition.what) (\(left))")
        default:
            if let action = record(event) { return emit(action) }
            return proceed()
        }
    }

    mutating func emit(_ action: Action) -> Action {
        last = action
        if case .finish = action { stage = .finished }
        return action
    }

    mutating func proceed() -> Action {
        while queue.isEmpty {
            if let action = advance() { return emit(action) }
        }
        return emit(queue.removeFirst())
    }

    mutating func finish(_ outcome: ProcedureOutcome) -> Action {
        queue = []
        return .finish(outcome)
    }

    // MARK: - Answers

    /// Takes in what the last action did; returns an action that must come next (a refusal, a stop).
    mutating func record(_ event: Event) -> Action? {
        switch (last, event) {
        case (.observe, .observed(let observed)):
            observation = observed
            return nil
        case (.createSchema(let tables, _, _), .done):
            schemaCreated = tables
            return nil
        case (.check, .checked(let results)):
            return stage == .checkingRights ? judgeRights(results) : judge(results)
        case (.readSlotPosition(let peer, let slot), .position(let position)):
            guard let position else { return stop("\(peer): slot \(slot) has no position") }
            startPositions[peer] = position
            say("    \(peer): slot \(slot) exists (from an earlier attempt) at \(position)")
        case (.createSlot(let peer, let slot, let plugin), .position(let position)):
            guard let position else { return stop("\(peer): slot \(slot) has no position") }
            changed = true
            startPositions[peer] = position
            say("    \(peer): created slot \(slot) (plugin \(plugin)), consistent point C_\(peer) = \(position)")
        case (.disableSubscription(_, let subscription), .done):
            if stage == .pause { paused.append(subscription) }
        case (.readAppliedPosition(_, _, let peer), .position(let position)):
            applied[peer] = position ?? .lsn(.zero)
            say("    \(source) applied \(peer) up to R_\(peer) = \(position ?? .lsn(.zero))")
        case (.exportSnapshot(_, let slot, _, _), .snapshot(let point, let name)):
            changed = true
            consistentPoint = point
            snapshot = name
            say("    \(source): created slot \(slot), consistent point \(point), snapshot \(name)")
        case (.enableSubscription(_, let subscription), .done):
            paused.removeAll { $0 == subscription }
        case (.observeMesh, .mesh(let states)):
            meshStates = states
        case (.run, .done):
            if stage == .wiring { changed = true }
        case (.readCurrentPosition(let member), .position(let position)):
            let target = position ?? .lsn(.zero)
            catchUpTargets[member] = target
            queue.insert(.wait(.slotConfirmed(node: member, slot: slotForNode, target: target,
                                              what: "\(node) applied \(member) up to \(target)")), at: 0)
        default:
            break
        }
        return nil
    }

    mutating func say(_ line: String) {
        if !request.dryRun { queue.insert(.say(line), at: 0) }
    }

    func stop(_ message: String) -> Action {
        .finish(.stopped(lines: stoppedLines(message), changed: changed))
    }

    func stoppedLines(_ message: String) -> [String] {
        ["mmlite join: \(message)", changed
            ? "join stopped part-way. Fix the cause, then run `mmlite join \(node) --from \(source)` again: it continues from what exists (an unfinished copy is redone)."
            : "Nothing was changed."]
    }

    /// A failed action: before anything changed it is a refusal; in the pause,
    /// SOURCE's paused subscriptions are enabled again first.
    mutating func failed(_ message: String) -> Action {
        switch stage {
        case .creatingSchema:
            return emit(finish(.refused(.failedCheck, lines: ["mmlite join: \(message)", "Nothing was changed."])))
        case .installing:
            return emit(finish(.refused(.failedCheck, lines: ["mmlite join: installing conflict handling on \(node) failed: \(message)", "Nothing was changed."])))
        case .finished:
            // A failure while re-enabling paused subscriptions: go on with the rest.
            return queue.isEmpty ? .finish(.stopped(lines: stoppedLines(message), changed: changed)) : emit(queue.removeFirst())
        default:
            let resume = paused.map { Action.enableSubscription(node: source, subscription: $0) }
            paused = []
            queue = resume + [.finish(.stopped(lines: stoppedLines(message), changed: changed))]
            stage = .finished
            return emit(queue.removeFirst())
        }
    }

    // MARK: - Decisions before any change

    mutating func decide() -> Action? {
        guard let observed = observation else { return .observe }
        if node == source {
            return finish(.refused(.usage, lines: ["mmlite: \(node) cannot join from itself; --from names a member of the mesh"]))
        }
        if !observed.unreachable.isEmpty {
            let lines = request.config.nodes.compactMap { configured in
                observed.unreachable[configured.name].map { "mmlite: cannot connect to \(configured.name) (\(DSN.masked(configured.dsn))): \($0)" }
            }
            return finish(.refused(.unreachable, lines: lines + ["Nothing was changed. Every node must be reachable for join (`mmlite part NODE --force` removes a node that is gone)."]))
        }
        let observedMembers = view.members(joiningFrom: source)
        if observedMembers.contains(node) && !view.isRunning {
            return finish(.refused(.failedCheck, lines: ["mmlite: mesh \"\(request.config.mesh.name)\" is not running yet (no node subscribes to another): build it with `mmlite apply` (leave \(node) out of the file until then), then join further nodes"]))
        }
        if !observedMembers.contains(source) {
            return finish(.refused(.failedCheck, lines: ["mmlite: \(source) is not a member of mesh \"\(request.config.mesh.name)\" (members: \(observedMembers.joined(separator: ", "))); --from must name one"]))
        }
        return nil
    }

    /// The --copy-schema tables NODE still lacks (in a dry run: the ones it would create).
    var schemaToCreate: [QualifiedName] {
        guard request.copySchema else { return [] }
        return request.dryRun ? observation?.missingOnNode ?? [] : schemaCreated
    }

    mutating func planConflicts() -> Action? {
        guard let observed = observation else { return nil }
        if !observed.conflictProblems.isEmpty {
            return finish(.refused(.failedCheck, lines: observed.conflictProblems.map { "mmlite join: conflict handling: \($0)" } + ["Nothing was changed."]))
        }
        members = view.members(joiningFrom: source)
        let planner = ConflictPlanner(tables: observed.conflictTables)
        do {
            let outdated = try planner.steps(nodes: others, observed: observed.conflictRegistries)
            if !outdated.isEmpty {
                return finish(.refused(.failedCheck, lines: [
                    "mmlite join: conflict handling on \(outdated.map(\.node).joined(separator: ", ")) differs from \(request.configPath); nothing was changed.",
                    "Run `mmlite apply` first (it leaves \(node) out), then join."]))
            }
            conflictSteps = try planner.steps(nodes: [node], observed: observed.conflictRegistries)
        } catch let error as ConflictSQL.GenerationError {
            return finish(.refused(.failedCheck, lines: ["mmlite join: conflict handling: \(error.message)", "Nothing was changed."]))
        } catch {
            return finish(.refused(.failedCheck, lines: ["mmlite join: conflict handling: \(error)", "Nothing was changed."]))
        }
        for step in conflictSteps {
            queue.append(.run(step))
            if !request.dryRun { queue.append(.say("\(node): \(step.summary)")) }
        }
        return nil
    }

    func probes() throws -> Probes {
        var probes = Probes()
        for member in others {
            for link in [Link(publisher: member, subscriber: node), Link(publisher: node, subscriber: member)] {
                probes.peers.insert(link)
                if try view.filter(for: link) == .mmlite { probes.plugin.insert(link.publisher) }
            }
        }
        return probes
    }

    var unchanged: String {
        request.dryRun || conflictSteps.isEmpty ? "nothing was changed"
            : "only the conflict-handling objects were installed on \(node) (a re-run keeps them)"
    }

    /// The checks' verdict, the copy state and the non-empty tables decide whether to go on.
    mutating func judge(_ results: [CheckResult]) -> Action? {
        // A dry run does not create the schema or the conflict objects, so the
        // checks of NODE's tables and of the probes reading them cannot pass yet.
        let notYetCreated = request.dryRun && (!schemaToCreate.isEmpty || !conflictSteps.isEmpty)
        let failures = results.filter { result in
            result.status == .failure && !(notYetCreated && result.node == node && (result.check == "table" || result.check == "peer"))
        }
        if !failures.isEmpty {
            return finish(.refused(.failedCheck, lines: ["mmlite join: \(failures.count) check\(failures.count == 1 ? "" : "s") failed; \(unchanged)."], checks: failures))
        }
        guard let observed = observation else { return .observe }
        copyDone = members.contains(node) || observed.copyMark != nil
        nonEmpty = copyDone ? [] : observed.nonEmptyOnNode.filter { !schemaToCreate.contains($0) }
        if !nonEmpty.isEmpty && !request.force {
            return finish(.refused(.failedCheck, lines: [
                "mmlite join: \(node) already has rows in \(nonEmpty.map(\.sql).joined(separator: ", ")); \(unchanged).",
                "join copies every table from \(source) into empty tables. Empty them, or pass --force to have join empty them first."]))
        }
        return nil
    }

    var summary: String {
        "\(others.count) members, \(tables.count) table\(tables.count == 1 ? "" : "s")"
    }

    // MARK: - Phases

    /// Moves to the next stage: fills the queue, or returns the action that ends the procedure.
    mutating func advance() -> Action? {
        switch stage {
        case .start:
            stage = .observing
            queue = [.observe]
        case .observing, .reobserving:
            if let refusal = decide() { return refusal }
            let missing = observation?.missingOnNode ?? []
            if stage == .observing && request.copySchema && !missing.isEmpty {
                stage = .creatingSchema
                queue = [.createSchema(tables: missing, from: source, on: node)]
                if !request.dryRun { queue.append(.observe) }
                return nil
            }
            return enterInstalling()
        case .creatingSchema:
            stage = .reobserving
            return request.dryRun ? enterInstalling() : nil
        case .checkingRights:
            stage = .installing
            return planConflicts()
        case .installing:
            stage = .checking
            do { queue = [.check(try probes())] } catch { return finish(.refused(.failedCheck, lines: ["mmlite: cannot plan: \(error)", "Nothing was changed."])) }
        case .checking:
            return enterCopyOrWiring()
        case .droppingStale:
            beginPhase(.peerSlots, "slots for \(node) on \(peerList) (before the copy)")
            for peer in peers {
                if observation?.states[peer]?.slots[slotForNode] != nil {
                    queue.append(.readSlotPosition(node: peer, slot: slotForNode))
                } else {
                    queue.append(.createSlot(node: peer, slot: slotForNode, plugin: plugin(peer, node)))
                }
            }
            endPhase()
        case .peerSlots:
            beginPhase(.sourceCatchUp, "wait until \(source) has applied every other member up to that point")
            for peer in peers {
                let target = startPositions[peer] ?? .lsn(.zero)
                queue.append(.wait(.slotConfirmed(node: peer, slot: names.slot(subscriber: source), target: target,
                                                  what: "\(source) applied \(peer) up to \(target)")))
            }
            endPhase()
        case .sourceCatchUp:
            beginPhase(.pause, "pause \(source)'s subscriptions from \(peerList); read how far it applied each; export a snapshot")
            queue.append(.startClock("pause"))
            for peer in peers {
                let subscription = names.subscription(publisher: peer)
                queue += [.disableSubscription(node: source, subscription: subscription),
                          .wait(.workerStopped(node: source, subscription: subscription)),
                          .readAppliedPosition(node: source, subscription: subscription, peer: peer)]
            }
            queue.append(.exportSnapshot(node: source, slot: sourceSlot, plugin: plugin(source, node),
                                         major: observation?.states[source]?.major ?? 0))
            endPhase()
        case .pause:
            stage = .resume
            queue = paused.map { .enableSubscription(node: source, subscription: $0) }
            if !request.dryRun { queue.append(.sayElapsed("    \(source)'s subscriptions resumed; paused for %@ s", clock: "pause")) }
        case .resume:
            beginPhase(.advance, "start each member's slot for \(node) where the copy ends")
            for peer in peers {
                let at = startPositions[peer] ?? .lsn(.zero), target = applied[peer] ?? .lsn(.zero)
                if let from = at.lsn, let to = target.lsn, !JoinSQL.needsAdvance(slotAt: from, applied: to) {
                    queue.append(.say("    \(peer): \(slotForNode) stays at \(at) (\(source) had applied \(peer) up to \(target))"))
                } else {
                    queue.append(.advanceSlot(node: peer, slot: slotForNode, to: target))
                    if !request.dryRun { queue.append(.say("    \(peer): advanced \(slotForNode) from \(at) to \(target) (changes up to there are in the copy)")) }
                }
            }
            endPhase()
        case .advance:
            beginPhase(.copy, "copy \(tables.count) table\(tables.count == 1 ? "" : "s") from \(source) into \(node) in that snapshot")
            queue.append(.copy(Copy(source: source, node: node, tables: tables + versionTables, versionTables: versionTables,
                                    emptied: nonEmpty, origin: names.joinOrigin, snapshot: snapshot, consistentPoint: consistentPoint)))
            endPhase()
            queue.append(.releaseSnapshot)
        case .copy:
            stage = .observingMesh
            queue = [.observeMesh]
        case .observingMesh:
            return enterWiring()
        case .wiring:
            beginPhase(.catchUp, "wait until \(node) has caught up with every member")
            queue += others.map { .readCurrentPosition(node: $0) }
            endPhase()
            queue.append(.dropOrigin(node: node, origin: names.joinOrigin))
        case .catchUp:
            return finish(.done)
        case .finished:
            return finish(.done)
        }
        return nil
    }

    /// First the rights (facts only, no probe), so that a missing one
    /// refuses before conflict handling is installed on NODE.
    mutating func enterInstalling() -> Action? {
        stage = .checkingRights
        queue = [.check(Probes())]
        return nil
    }

    static let rightsChecks: Set<String> = ["privileges", "join_privileges", "peer_role", "peer_password"]

    mutating func judgeRights(_ results: [CheckResult]) -> Action? {
        let failures = results.filter { $0.status == .failure && Self.rightsChecks.contains($0.check) }
        guard !failures.isEmpty else { return nil }
        return finish(.refused(.failedCheck, lines: ["mmlite join: \(failures.count) check\(failures.count == 1 ? "" : "s") failed; nothing was changed."], checks: failures))
    }

    mutating func enterCopyOrWiring() -> Action? {
        if request.dryRun {
            queue.append(.say("Plan to join \(node) to mesh \"\(request.config.mesh.name)\" from \(source) (\(summary)). Dry run: nothing is changed."))
            if copyDone { queue.append(.say("The copy is already done; the join continues with the wiring.")) }
        } else {
            queue.append(.say(copyDone
                ? "Resuming join of \(node) to mesh \"\(request.config.mesh.name)\" (\(summary)): the copy is done."
                : "Joining \(node) to mesh \"\(request.config.mesh.name)\" from \(source) (\(summary)):"))
        }
        if copyDone {
            stage = .copy
            return nil
        }
        stage = .droppingStale
        // A slot of an attempt whose copy did not commit: its snapshot is gone.
        if let stale = observation?.states[source]?.slots[sourceSlot] {
            if stale.active { return stop("\(source): slot \(sourceSlot) is in use; is another join running?") }
            queue.append(.dropSlot(node: source, slot: sourceSlot))
            if !request.dryRun { queue.append(.say("    dropped \(source)'s slot \(sourceSlot) left by an interrupted join")) }
        }
        return nil
    }

    mutating func enterWiring() -> Action? {
        var states = meshStates
        if request.dryRun {
            // What the earlier phases would have created.
            states = observation?.states ?? [:]
            if !copyDone {
                for member in others { states[member]?.slots[slotForNode] = SlotState(plugin: plugin(member, node)) }
            }
        }
        for member in others where states[member]?.slots[slotForNode] == nil {
            return stop("\(member): slot \(slotForNode) is missing after the copy, so \(node) cannot start at the right place; run `mmlite part \(node)`, empty its tables and join again")
        }
        let published = ConflictSQL.publishedTables(tables, settings: request.config.tableSettings)
        let withNode = request.config.nodes.map(\.name).filter { members.contains($0) || $0 == node }
        let wiring: Plan
        do {
            wiring = try Planner(config: request.config, tables: published).plan(states: states, members: withNode)
        } catch {
            return stop("cannot plan the wiring: \(error)")
        }
        stage = .wiring
        if !wiring.steps.isEmpty {
            beginPhase(.wiring, "subscriptions of \(node) on those slots (no copy), its publication, its slots and the members' subscriptions from it")
            for step in wiring.steps {
                queue.append(.run(step))
                if !request.dryRun { queue.append(.say("    \(step.node): \(step.summary)")) }
            }
            endPhase()
        }
        return nil
    }

    var peerList: String { peers.isEmpty ? "no other member" : peers.joined(separator: ", ") }

    func plugin(_ publisher: String, _ subscriber: String) -> String {
        view.plannedFilter(for: Link(publisher: publisher, subscriber: subscriber)).slotPlugin
    }

    mutating func beginPhase(_ next: Stage, _ title: String) {
        stage = next
        phaseNumber += 1
        phases.append(title)
        queue.append(.beginPhase(phaseNumber, title))
    }

    mutating func endPhase() { queue.append(.endPhase(phaseNumber)) }

    // MARK: - Dry run

    /// What a real run would answer to `action`, with placeholders for the
    /// positions it would read: a dry run drives the machine with these.
    public func simulatedEvent(for action: Action) -> Event {
        switch action {
        case .readSlotPosition(let peer, _), .createSlot(let peer, _, _):
            return .position(.placeholder("C_\(peer)"))
        case .readAppliedPosition(_, _, let peer):
            return .position(.placeholder("R_\(peer)"))
        case .exportSnapshot:
            return .snapshot(consistentPoint: .placeholder("CONSISTENT_POINT"), name: "SNAPSHOT")
        case .readCurrentPosition(let member):
            return .position(.placeholder("CURRENT_\(member)"))
        case .observeMesh:
            return .mesh(observation?.states ?? [:])
        default:
            return .done
        }
    }
}

extension JoinProcedure.Action {
    /// The statements this action runs, as a dry run prints them (nothing for
    /// the read-only observations and the procedure's own bookkeeping).
    public func statements(names: ObjectNames) -> [ShownStatement] {
        switch self {
        case .createSchema(let tables, let source, let node):
            return [ShownStatement(node, "-- create \(tables.map(\.sql).joined(separator: ", ")) from \(source)'s definitions: pg_dump --schema-only --format=custom (on \(source)) | pg_restore (into \(node))")]
        case .run(let step):
            return [ShownStatement(step.node, step.displaySQL)]
        case .dropSlot(let node, let slot):
            return [ShownStatement(node, JoinSQL.dropSlot(slot))]
        case .readSlotPosition(let node, let slot):
            return [ShownStatement(node, JoinSQL.slotPosition(slot), note: "C_\(node)")]
        case .createSlot(let node, let slot, let plugin):
            return [ShownStatement(node, JoinSQL.createSlot(slot, plugin: plugin), note: "C_\(node)")]
        case .wait(let condition):
            return [ShownStatement(condition.node, condition.query, note: condition.until)]
        case .disableSubscription(let node, let subscription):
            return [ShownStatement(node, JoinSQL.disableSubscription(subscription))]
        case .enableSubscription(let node, let subscription):
            return [ShownStatement(node, JoinSQL.enableSubscription(subscription))]
        case .readAppliedPosition(let node, let subscription, let peer):
            return [ShownStatement(node, JoinSQL.appliedPosition(subscription), note: "R_\(peer)")]
        case .exportSnapshot(let node, let slot, let plugin, let major):
            return [ShownStatement("\(node), replication connection kept open until the copy ends",
                                   JoinSQL.createSlotExportingSnapshot(slot: slot, plugin: plugin, major: major))]
        case .advanceSlot(let node, let slot, let position):
            return [ShownStatement(node, JoinSQL.advanceSlot(slot, to: position.description))]
        case .copy(let copy):
            var shown = [ShownStatement(copy.source, JoinSQL.beginSnapshotRead),
                         ShownStatement(copy.source, JoinSQL.setSnapshot(copy.snapshot)),
                         ShownStatement(copy.node, JoinSQL.createOrigin(copy.origin))]
            shown += JoinSQL.copySessionSetup(origin: copy.origin).map { ShownStatement(copy.node, $0) }
            if !copy.truncated.isEmpty {
                shown.append(ShownStatement(copy.node, JoinSQL.truncate(copy.truncated)))
            }
            for table in copy.tables {
                shown.append(ShownStatement("\(copy.source) -> \(copy.node)", JoinSQL.copyOut(table, columns: []) + " | " + JoinSQL.copyIn(table, columns: [])))
            }
            shown += JoinSQL.copyCommit(lsn: copy.consistentPoint.description).map { ShownStatement(copy.node, $0) }
            return shown
        case .readCurrentPosition(let node):
            return [ShownStatement(node, JoinSQL.currentPosition(), note: "CURRENT_\(node)")]
        case .dropOrigin(let node, let origin):
            return [ShownStatement(node, JoinSQL.dropOrigin(origin))]
        case .observe, .check, .beginPhase, .endPhase, .say, .startClock, .sayElapsed, .releaseSnapshot, .observeMesh, .finish:
            return []
        }
    }
}
