/// `mmlite ddl` as a state machine (see `JoinProcedure` for how runner and
/// machine talk): one migration, atomic on every node, while writes go on.
///
/// Phases: observe (every node reachable, no interrupted migration, prepared
/// transactions allowed) → fence every mesh table on every member (local
/// writes to them fail with 40001 "retry"; arriving changes still apply) →
/// drain every link up to each publisher's position after its fence → on
/// every node, in one transaction: the transactional statements, conflict
/// handling following the new columns, the publication following created and
/// dropped tables, the fence dropped, the migration recorded; PREPARE →
/// COMMIT PREPARED everywhere → subscriptions refreshed for created tables,
/// their fences dropped → statements PostgreSQL runs only outside a
/// transaction (SQLSTATE 25001, e.g. CREATE INDEX CONCURRENTLY), node by
/// node, in their order. A failure before the first COMMIT PREPARED rolls
/// back everything (nothing changed); an interruption is finished by
/// `mmlite ddl --resume`, which commits a migration that any node committed
/// or every node prepared, and rolls it back otherwise.
public struct DDLProcedure: Sendable {
    public struct Request: Sendable {
        public var config: MeshConfig
        /// The migration's statements (`SQLScript.statements`); empty with `resume`.
        public var statements: [String]
        public var resume: Bool
        public var dryRun: Bool
        public var timeout: Double
        /// How long a statement waits for a lock before the migration gives up.
        public var lockTimeout: Int
        /// Names this migration (transaction names, the record on each node).
        public var id: String

        public init(config: MeshConfig, statements: [String], resume: Bool = false, dryRun: Bool = false,
                    timeout: Double = 300, lockTimeout: Int = 10, id: String) {
            self.config = config
            self.statements = statements
            self.resume = resume
            self.dryRun = dryRun
            self.timeout = timeout
            self.lockTimeout = lockTimeout
            self.id = id
        }
    }

    public struct Observation: Sendable {
        public var states: [String: NodeState]
        public var unreachable: [String: String]
        /// The mesh's tables (wildcards resolved).
        public var tables: [QualifiedName]
        /// This mesh's prepared migrations (transaction names) per node.
        public var prepared: [String: [String]] = [:]
        /// Per node, which of the prepared migrations' ids it has committed.
        public var recorded: [String: Set<String>] = [:]
        /// Tables with a fence left by an interrupted migration, per node.
        public var fenced: [String: [QualifiedName]] = [:]
        /// `max_prepared_transactions` per node.
        public var maxPreparedTransactions: [String: Int] = [:]

        public init(states: [String: NodeState], unreachable: [String: String] = [:], tables: [QualifiedName]) {
            self.states = states
            self.unreachable = unreachable
            self.tables = tables
        }
    }

    /// What one node's transaction did, read inside it before PREPARE.
    public struct Prepared: Sendable, Equatable {
        /// Indices of statements PostgreSQL refused inside a transaction (25001).
        public var outside: [Int]
        public var created: [QualifiedName]
        public var dropped: [QualifiedName]
        public init(outside: [Int] = [], created: [QualifiedName] = [], dropped: [QualifiedName] = []) {
            self.outside = outside
            self.created = created
            self.dropped = dropped
        }
    }

    /// One node's transaction: what the runner runs before PREPARE.
    public struct Work: Sendable, Equatable {
        public var node: String
        public var gid: String
        public var statements: [String]
        /// The mesh's tables (those that opt in to conflict handling follow their new columns).
        public var tables: [QualifiedName]
        public var unfence: [QualifiedName]
        /// Whether the node publishes (is a member): created mesh tables join its publication.
        public var member: Bool
        public var origin: String
        public var lockTimeout: Int
        public var record: String
    }

    public enum Action: Sendable, Equatable {
        case observe
        case say(String)
        case fence(node: String, tables: [QualifiedName])
        case unfence(node: String, tables: [QualifiedName])
        /// Answer: `.position`.
        case readCurrentPosition(node: String)
        case wait(WaitCondition)
        /// Answer: `.prepared`.
        case prepare(Work)
        case commitPrepared(node: String, gid: String)
        case rollbackPrepared(node: String, gid: String)
        case refreshSubscription(node: String, subscription: String)
        case runOutside(node: String, statement: String)
        case finish(ProcedureOutcome)
    }

    public enum Event: Sendable {
        case observed(Observation)
        case done
        case position(Position?)
        case prepared(Prepared)
        case timedOut(String)
        case failed(String)
    }

    enum Stage: Sendable, Equatable {
        case start, observing, fencing, positions, draining, preparing, committing, refreshing, outside, finished
    }

    public let request: Request
    var stage = Stage.start
    var queue: [Action] = []
    var last: Action = .observe
    var observation: Observation?
    var positions: [String: Position] = [:]
    var results: [String: Prepared] = [:]
    /// Nodes fenced, prepared and committed so far (what a failure must undo, or may no longer).
    var fencedNodes: [String] = []
    var preparedNodes: [String] = []
    var committedNodes: [String] = []

    public init(_ request: Request) { self.request = request }

    var config: MeshConfig { request.config }
    var names: ObjectNames { config.names }
    var nodes: [String] { config.nodes.map(\.name) }
    var gid: String { DDLSQL.gid(mesh: config.mesh.name, id: request.id) }
    /// Nodes that publish: their writes travel, so they are fenced and drained.
    var members: [String] { nodes.filter { observation?.states[$0]?.publication != nil } }

    public mutating func start() -> Action {
        stage = .observing
        return emit(.observe)
    }

    public mutating func next(_ event: Event) -> Action {
        switch event {
        case .failed(let message):
            return emit(fail(message))
        case .timedOut(let left):
            guard case .wait(let condition) = last else { return emit(fail("timed out (\(left))")) }
            return emit(fail("timed out after \(Int(request.timeout)) s waiting for \(condition.what) (\(left))"))
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

    mutating func record(_ event: Event) -> Action? {
        switch (last, event) {
        case (.observe, .observed(let observed)):
            observation = observed
            return request.resume ? nil : refusal()
        case (.fence(let node, _), .done):
            fencedNodes.append(node)
        case (.readCurrentPosition(let node), .position(let position)):
            positions[node] = position ?? .lsn(.zero)
        case (.prepare(let work), .prepared(let result)):
            preparedNodes.append(work.node)
            results[work.node] = result
        case (.commitPrepared(let node, _), .done):
            committedNodes.append(node)
        default:
            break
        }
        return nil
    }

    /// Before anything changes: what makes the migration impossible now.
    func refusal() -> Action? {
        guard let observed = observation else { return nil }
        let unreachable = nodes.filter { observed.unreachable[$0] != nil }
        if !unreachable.isEmpty {
            return .finish(.refused(.unreachable, lines: unreachable.map { "mmlite: cannot connect to \($0): \(observed.unreachable[$0] ?? "")" }
                + ["Nothing was changed. A migration runs on every node at once, so every node must be reachable."]))
        }
        let interrupted = nodes.filter { !(observed.prepared[$0] ?? []).isEmpty || !(observed.fenced[$0] ?? []).isEmpty }
        if !interrupted.isEmpty {
            return .finish(.refused(.failedCheck, lines: [
                "mmlite ddl: an interrupted migration is still open on \(interrupted.joined(separator: ", ")) (a prepared transaction or a fence: see `mmlite status`).",
                "Nothing was changed. Finish it first: mmlite ddl --resume"]))
        }
        let noPrepared = nodes.filter { (observed.maxPreparedTransactions[$0] ?? 0) < 1 }
        if !noPrepared.isEmpty {
            return .finish(.refused(.failedCheck, lines: [
                "mmlite ddl: max_prepared_transactions is 0 on \(noPrepared.joined(separator: ", ")): a migration commits on every node with PREPARE TRANSACTION.",
                "Nothing was changed. Fix: ALTER SYSTEM SET max_prepared_transactions = 10; then restart PostgreSQL on those nodes (`mmlite doctor` checks it)."]))
        }
        if request.statements.isEmpty {
            return .finish(.refused(.usage, lines: ["mmlite ddl: the migration has no statement"]))
        }
        return nil
    }

    mutating func advance() -> Action? {
        if request.resume { return advanceResume() }
        guard let observation else { return .finish(.done) }
        let meshTables = observation.tables
        switch stage {
        case .start, .observing:
            stage = .fencing
            queue.append(.say("Migration \(request.id) on \(nodes.count) nodes: \(request.statements.count) statement\(request.statements.count == 1 ? "" : "s")"))
            if !meshTables.isEmpty {
                queue.append(.say("[1] fence \(meshTables.map(\.sql).joined(separator: ", ")) on \(members.joined(separator: ", ")): local writes to them fail with SQLSTATE 40001 (retry) until the migration commits"))
                for node in members { queue.append(.fence(node: node, tables: meshTables)) }
            }
        case .fencing:
            stage = .positions
            for node in members { queue.append(.readCurrentPosition(node: node)) }
        case .positions:
            stage = .draining
            drain()
        case .draining:
            stage = .preparing
            queue.append(.say("[3] run the migration on every node and PREPARE TRANSACTION \(gid)"))
            for node in nodes {
                queue.append(.prepare(Work(node: node, gid: gid, statements: request.statements, tables: meshTables,
                                           unfence: members.contains(node) ? meshTables : [], member: members.contains(node),
                                           origin: names.ddlOrigin, lockTimeout: request.lockTimeout,
                                           record: DDLSQL.record(id: request.id, statements: request.statements))))
            }
        case .preparing:
            if let differing = inconsistency() { return fail(differing) }
            stage = .committing
            queue.append(.say("[4] COMMIT PREPARED on every node"))
            for node in nodes { queue.append(.commitPrepared(node: node, gid: gid)) }
        case .committing:
            stage = .refreshing
            refreshForCreated()
        case .refreshing:
            stage = .outside
            runOutside()
        case .outside:
            stage = .finished
            queue.append(.say("Done: migration \(request.id) committed on every node."))
        case .finished:
            return .finish(.done)
        }
        return nil
    }

    mutating func drain() {
        guard let observation else { return }
        queue.append(.say("[2] wait until every node has applied every other up to its fence"))
        for publisher in members {
            guard let position = positions[publisher] else { continue }
            for subscriber in members where subscriber != publisher {
                let slot = names.slot(subscriber: subscriber)
                guard observation.states[publisher]?.slots[slot] != nil else { continue }
                queue.append(.wait(.slotConfirmed(node: publisher, slot: slot, target: position,
                                                  what: "\(subscriber) applied \(publisher)'s changes up to \(position)")))
            }
        }
    }

    /// Every node must have done the same: the same statements outside, the same tables created and dropped.
    func inconsistency() -> String? {
        guard let first = nodes.first, let reference = results[first] else { return nil }
        for node in nodes.dropFirst() {
            guard let result = results[node], result != reference else { continue }
            return "the migration did not do the same on \(first) and \(node) (created \(reference.created.map(\.sql)) / \(result.created.map(\.sql)), dropped \(reference.dropped.map(\.sql)) / \(result.dropped.map(\.sql))); the nodes' schemas differ: compare them (`mmlite doctor`)"
        }
        return nil
    }

    mutating func refreshForCreated() {
        guard let created = results.values.first?.created, !created.isEmpty else { return }
        queue.append(.say("[5] subscriptions learn the new tables \(created.map(\.sql).joined(separator: ", ")); then their fences go"))
        for subscriber in members {
            for publisher in members where publisher != subscriber {
                queue.append(.refreshSubscription(node: subscriber, subscription: names.subscription(publisher: publisher)))
            }
        }
        for node in nodes { queue.append(.unfence(node: node, tables: created)) }
    }

    mutating func runOutside() {
        guard let outside = results.values.first?.outside, !outside.isEmpty else { return }
        queue.append(.say("[6] statements that run outside a transaction, node by node"))
        for index in outside where request.statements.indices.contains(index) {
            for node in nodes {
                queue += [.runOutside(node: node, statement: request.statements[index]),
                          .say("    \(node): \(Self.abbreviated(request.statements[index])) ... done")]
            }
        }
    }

    /// A failure: before the first COMMIT PREPARED everything is undone; after, a re-run finishes it.
    mutating func fail(_ message: String) -> Action {
        if !committedNodes.isEmpty {
            return .finish(.stopped(lines: [
                "mmlite ddl: \(message)",
                "The migration is committed on \(committedNodes.joined(separator: ", ")) and prepared on the others. Run `mmlite ddl --resume` (when the node is back): it commits it everywhere."],
                changed: true))
        }
        let undo: [Action] = preparedNodes.map { .rollbackPrepared(node: $0, gid: gid) }
            + fencedNodes.map { .unfence(node: $0, tables: observation?.tables ?? []) }
        let end = Action.finish(.stopped(lines: ["mmlite ddl: \(message)", "Nothing was changed: the migration was rolled back on every node."], changed: false))
        preparedNodes = []
        fencedNodes = []
        stage = .finished
        queue = undo + [end]
        return queue.removeFirst()
    }

    static func abbreviated(_ statement: String) -> String {
        let line = statement.split(whereSeparator: \.isNewline).first.map(String.init) ?? statement
        return line.count > 60 ? String(line.prefix(57)) + "..." : line
    }

    // MARK: resume

    mutating func advanceResume() -> Action? {
        guard let observation else { return .finish(.done) }
        switch stage {
        case .start, .observing:
            stage = .committing
            let unreachable = nodes.filter { observation.unreachable[$0] != nil }
            let gids = Set(observation.prepared.values.flatMap { $0 }).sorted()
            if !unreachable.isEmpty && !gids.isEmpty {
                return .finish(.refused(.unreachable, lines: unreachable.map { "mmlite: cannot connect to \($0): \(observation.unreachable[$0] ?? "")" }
                    + ["Nothing was changed. Resuming decides from every node whether the migration committed anywhere: every node must be reachable."]))
            }
            for gid in gids { resolve(gid, observation) }
            for node in nodes {
                let fenced = observation.fenced[node] ?? []
                if !fenced.isEmpty {
                    queue += [.unfence(node: node, tables: fenced), .say("\(node): dropped the fence on \(fenced.map(\.sql).joined(separator: ", "))")]
                }
            }
            if queue.isEmpty { queue.append(.say("No interrupted migration of mesh \"\(config.mesh.name)\": nothing to do.")) }
        case .committing:
            stage = .finished
            if !committedNodes.isEmpty {
                for subscriber in members {
                    for publisher in members where publisher != subscriber {
                        queue.append(.refreshSubscription(node: subscriber, subscription: names.subscription(publisher: publisher)))
                    }
                }
            }
        default:
            return .finish(.done)
        }
        return nil
    }

    /// Presumed abort: commit where any node committed or every node
    /// prepared (nothing commits before all prepared); else roll back.
    mutating func resolve(_ gid: String, _ observation: Observation) {
        let id = String(gid.dropFirst(DDLSQL.gid(mesh: config.mesh.name, id: "").count))
        let preparedOn = nodes.filter { observation.prepared[$0]?.contains(gid) == true }
        let committedOn = nodes.filter { observation.recorded[$0]?.contains(id) == true }
        let commit = !committedOn.isEmpty || preparedOn.count == nodes.count
        queue.append(.say("Migration \(id): prepared on \(preparedOn.joined(separator: ", "))" + (committedOn.isEmpty ? "" : ", committed on \(committedOn.joined(separator: ", "))")
                          + (commit ? ": committing it everywhere" : ": not prepared everywhere and committed nowhere: rolling it back")))
        for node in preparedOn {
            queue += [commit ? .commitPrepared(node: node, gid: gid) : .rollbackPrepared(node: node, gid: gid),
                      .say("  \(node): \(commit ? "committed" : "rolled back")")]
        }
    }
}

extension DDLProcedure {
    /// What `status` says of a node where a migration was interrupted (empty: none).
    public static func interrupted(node: String, prepared: [String], fenced: [QualifiedName]) -> [String] {
        var problems: [String] = []
        if !prepared.isEmpty {
            problems.append("\(node): migration \(prepared.joined(separator: ", ")) is prepared but not committed (it holds its locks): run `mmlite ddl --resume`")
        }
        if !fenced.isEmpty {
            problems.append("\(node): writes to \(fenced.map(\.sql).joined(separator: ", ")) fail (fenced by an interrupted migration): run `mmlite ddl --resume`")
        }
        return problems
    }
}

extension ObjectNames {
    /// The replication origin a migration's own writes carry on each node.
    public var ddlOrigin: String { "mmlite_\(mesh)_ddl" }
}

extension DDLProcedure.Action {
    /// The statements the action runs, as a dry run shows them.
    public var statements: [ShownStatement] {
        switch self {
        case .fence(let node, let tables):
            return [ShownStatement(node, DDLSQL.fenceFunction)] + tables.map { ShownStatement(node, DDLSQL.fence($0)) }
        case .unfence(let node, let tables):
            return tables.map { ShownStatement(node, DDLSQL.unfence($0)) }
        case .prepare(let work):
            let body = ["BEGIN", DDLSQL.lockTimeout(seconds: work.lockTimeout)] + DDLSQL.originSetup(work.origin)
                + work.unfence.map(DDLSQL.unfence) + [ConflictSQL.allowTruncate] + work.statements
            return body.map { ShownStatement(work.node, $0) }
                + [ShownStatement(work.node, "-- conflict handling of opted-in tables follows their new columns; created mesh tables join publication \(work.member ? "and are fenced" : "(not a member: none)"); dropped ones leave it")]
                + [ShownStatement(work.node, work.record), ShownStatement(work.node, DDLSQL.prepare(gid: work.gid))]
        case .commitPrepared(let node, let gid):
            return [ShownStatement(node, DDLSQL.commitPrepared(gid: gid))]
        case .rollbackPrepared(let node, let gid):
            return [ShownStatement(node, DDLSQL.rollbackPrepared(gid: gid))]
        case .refreshSubscription(let node, let subscription):
            return [ShownStatement(node, DDLSQL.refresh(subscription))]
        case .runOutside(let node, let statement):
            return [ShownStatement(node, statement)]
        case .wait(let condition):
            return [ShownStatement(condition.node, condition.query, note: condition.until)]
        case .readCurrentPosition(let node):
            return [ShownStatement(node, JoinSQL.currentPosition())]
        case .observe, .say, .finish:
            return []
        }
    }

    /// Whether running it changes something (a dry run only shows those, and the reads).
    public var changes: Bool {
        switch self {
        case .fence, .unfence, .prepare, .commitPrepared, .rollbackPrepared, .refreshSubscription, .runOutside: return true
        case .observe, .say, .finish, .wait, .readCurrentPosition: return false
        }
    }
}
