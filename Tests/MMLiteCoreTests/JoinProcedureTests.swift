import MMLiteCore
import Testing

/// n1 and n2 form a running mesh over `users`; n3 is configured, not joined.
func runningTwoOfThree() throws -> [String: NodeState] {
    let config = try threeNodeConfig()
    var states = freshStates()
    let plan = try Planner(config: config, tables: [users]).plan(states: states, members: ["n1", "n2"])
    simulate(plan, on: &states, tables: [users])
    return states
}

func lsn(_ text: String) -> Position { .lsn(LSN(text)!) }

/// Drives a procedure with scripted answers; records every action until it finishes.
struct JoinScript {
    var procedure: JoinProcedure
    var actions: [JoinProcedure.Action] = []
    /// Answers an action; nil: the default answer below.
    var answer: (JoinProcedure.Action) -> JoinProcedure.Event?

    init(_ request: JoinProcedure.Request, answer: @escaping (JoinProcedure.Action) -> JoinProcedure.Event? = { _ in nil }) {
        procedure = JoinProcedure(request)
        self.answer = answer
    }

    /// Runs to the end; the outcome. `observation` answers `.observe`, `checks` answers `.check`.
    mutating func run(_ observation: JoinProcedure.Observation, checks: [CheckResult] = [], mesh: [String: NodeState]? = nil) -> ProcedureOutcome {
        var action = procedure.start()
        for _ in 0..<500 {
            actions.append(action)
            if case .finish(let outcome) = action { return outcome }
            let event: JoinProcedure.Event
            if let scripted = answer(action) {
                event = scripted
            } else {
                switch action {
                case .observe: event = .observed(observation)
                case .check: event = .checked(checks)
                case .readSlotPosition, .createSlot: event = .position(lsn("0/1000"))
                case .readAppliedPosition: event = .position(lsn("0/2000"))
                case .exportSnapshot: event = .snapshot(consistentPoint: lsn("0/3000"), name: "00000003-0000001B-1")
                case .readCurrentPosition: event = .position(lsn("0/4000"))
                case .observeMesh: event = .mesh(mesh ?? Self.afterCopy(observation.states))
                default: event = .done
                }
            }
            action = procedure.next(event)
        }
        Issue.record("the procedure did not finish")
        return .done
    }

    /// The states once the members' slots for n3 exist (phase 1).
    static func afterCopy(_ states: [String: NodeState]) -> [String: NodeState] {
        var states = states
        for member in ["n1", "n2"] { states[member]?.slots["mmlite_shop_n3"] = SlotState(plugin: "mmlite") }
        return states
    }

    var phases: [String] {
        actions.compactMap { if case .beginPhase(_, let title) = $0 { return title } else { return nil } }
    }

    var said: [String] {
        actions.compactMap { if case .say(let text) = $0 { return text } else { return nil } }
    }

    /// Actions that change or read a node (not the bookkeeping).
    var work: [JoinProcedure.Action] {
        actions.filter { action in
            switch action {
            case .say, .beginPhase, .endPhase, .startClock, .sayElapsed: return false
            default: return true
            }
        }
    }

    func index(_ predicate: (JoinProcedure.Action) -> Bool) -> Int? { actions.firstIndex(where: predicate) }
}

func joinRequest(_ config: MeshConfig, node: String = "n3", source: String = "n1", dryRun: Bool = false, force: Bool = false) -> JoinProcedure.Request {
    JoinProcedure.Request(config: config, configPath: "mmlite.toml", node: node, source: source, force: force, dryRun: dryRun, timeout: 60)
}

@Suite("JoinProcedure")
struct JoinProcedureTests {
    @Test("a fresh join goes through every phase in order: slots, catch-up, pause + snapshot, resume, advance, copy, wiring, catch-up, marker dropped")
    func everyPhase() throws {
        let config = try threeNodeConfig()
        let states = try runningTwoOfThree()
        var script = JoinScript(joinRequest(config))
        let outcome = script.run(JoinProcedure.Observation(states: states, tables: [users]))
        #expect(outcome == .done)
        #expect(script.phases.count == 7, "\(script.phases)")
        #expect(script.phases[0] == "slots for n3 on n2 (before the copy)")
        let slot = "mmlite_shop_n3"
        let expected: [JoinProcedure.Action] = [
            .observe,
            .createSlot(node: "n2", slot: slot, plugin: "mmlite"),
            .wait(.slotConfirmed(node: "n2", slot: "mmlite_shop_n1", target: lsn("0/1000"), what: "n1 applied n2 up to 0/1000")),
            .disableSubscription(node: "n1", subscription: "mmlite_shop_from_n2"),
            .wait(.workerStopped(node: "n1", subscription: "mmlite_shop_from_n2")),
            .readAppliedPosition(node: "n1", subscription: "mmlite_shop_from_n2", peer: "n2"),
            .exportSnapshot(node: "n1", slot: slot, plugin: "mmlite", major: 15),
            .enableSubscription(node: "n1", subscription: "mmlite_shop_from_n2"),
            .advanceSlot(node: "n2", slot: slot, to: lsn("0/2000")),
            .copy(JoinProcedure.Copy(source: "n1", node: "n3", tables: [users], versionTables: [], emptied: [],
                                     origin: "mmlite_shop_copy", snapshot: "00000003-0000001B-1", consistentPoint: lsn("0/3000"))),
            .releaseSnapshot,
            .observeMesh,
        ]
        #expect(Array(script.work.filter { if case .check = $0 { return false } else { return true } }.prefix(expected.count)) == expected)
        // The wiring: n3's publication, its slots for n1 and n2, subscriptions both ways.
        let wiring = script.work.compactMap { if case .run(let step) = $0 { return step } else { return nil } }
        #expect(wiring.contains { $0.node == "n3" && $0.kind == .createPublication })
        #expect(wiring.contains { $0.node == "n3" && $0.kind == .createSubscription && $0.sql.contains("slot_name = 'mmlite_shop_n3'") })
        #expect(wiring.contains { $0.node == "n1" && $0.kind == .createSubscription && $0.sql.contains("mmlite_shop_from_n3") })
        #expect(wiring.filter { $0.kind == .createSlot }.map(\.node) == ["n3", "n3"])
        // Then NODE catches up with each member; the marker goes last.
        let tail = Array(script.work.suffix(6))
        #expect(tail == [.readCurrentPosition(node: "n1"),
                         .wait(.slotConfirmed(node: "n1", slot: slot, target: lsn("0/4000"), what: "n3 applied n1 up to 0/4000")),
                         .readCurrentPosition(node: "n2"),
                         .wait(.slotConfirmed(node: "n2", slot: slot, target: lsn("0/4000"), what: "n3 applied n2 up to 0/4000")),
                         .dropOrigin(node: "n3", origin: "mmlite_shop_copy"),
                         .finish(.done)])
        #expect(script.said.contains("    n2: advanced mmlite_shop_n3 from 0/1000 to 0/2000 (changes up to there are in the copy)"))
        // The pause encloses only the positions and the snapshot.
        let disable = try #require(script.index { if case .disableSubscription = $0 { return true } else { return false } })
        let enable = try #require(script.index { if case .enableSubscription = $0 { return true } else { return false } })
        let export = try #require(script.index { if case .exportSnapshot = $0 { return true } else { return false } })
        #expect(disable < export && export < enable)
    }

    @Test("the checks probe the plugin and both directions of every new link before anything changes")
    func probesBeforeChanges() throws {
        var script = JoinScript(joinRequest(try threeNodeConfig()))
        _ = script.run(JoinProcedure.Observation(states: try runningTwoOfThree(), tables: [users]))
        #expect(script.work[1] == .check(Probes()), "first the rights, from facts alone")
        guard case .check(let probes) = script.work[2] else { Issue.record("third action is not the probing checks: \(script.work[2])"); return }
        #expect(probes.plugin == ["n1", "n2", "n3"])
        #expect(probes.peers == [Link(publisher: "n1", subscriber: "n3"), Link(publisher: "n3", subscriber: "n1"),
                                 Link(publisher: "n2", subscriber: "n3"), Link(publisher: "n3", subscriber: "n2")])
    }

    @Test("a slot already ahead of what SOURCE applied stays where it is")
    func noAdvance() throws {
        var script = JoinScript(joinRequest(try threeNodeConfig())) { action in
            if case .readAppliedPosition = action { return .position(lsn("0/800")) }
            return nil
        }
        #expect(script.run(JoinProcedure.Observation(states: try runningTwoOfThree(), tables: [users])) == .done)
        #expect(!script.work.contains { if case .advanceSlot = $0 { return true } else { return false } })
        #expect(script.said.contains("    n2: mmlite_shop_n3 stays at 0/1000 (n1 had applied n2 up to 0/800)"))
    }

    @Test("resumed after phase 1: the member's slot from the earlier attempt is reused, not created")
    func resumeAfterPeerSlots() throws {
        var states = try runningTwoOfThree()
        states["n2"]!.slots["mmlite_shop_n3"] = SlotState(plugin: "mmlite")
        var script = JoinScript(joinRequest(try threeNodeConfig()))
        #expect(script.run(JoinProcedure.Observation(states: states, tables: [users])) == .done)
        #expect(script.work.contains(.readSlotPosition(node: "n2", slot: "mmlite_shop_n3")))
        #expect(!script.work.contains { if case .createSlot = $0 { return true } else { return false } })
        #expect(script.said.contains("    n2: slot mmlite_shop_n3 exists (from an earlier attempt) at 0/1000"))
    }

    @Test("resumed after phases 2-4 (copy not committed): SOURCE's stale slot is dropped first, the copy is redone")
    func resumeBeforeCopyCommitted() throws {
        var states = try runningTwoOfThree()
        states["n2"]!.slots["mmlite_shop_n3"] = SlotState(plugin: "mmlite")
        states["n1"]!.slots["mmlite_shop_n3"] = SlotState(plugin: "mmlite", active: false)
        var script = JoinScript(joinRequest(try threeNodeConfig()))
        #expect(script.run(JoinProcedure.Observation(states: states, tables: [users])) == .done)
        let drop = try #require(script.index { $0 == .dropSlot(node: "n1", slot: "mmlite_shop_n3") })
        let first = try #require(script.index { if case .beginPhase(1, _) = $0 { return true } else { return false } })
        #expect(drop < first)
        #expect(script.said.contains("    dropped n1's slot mmlite_shop_n3 left by an interrupted join"))
        #expect(script.work.contains { if case .copy = $0 { return true } else { return false } })
    }

    @Test("a stale SOURCE slot in use means another join runs: stop, nothing changed")
    func staleSlotActive() throws {
        var states = try runningTwoOfThree()
        states["n1"]!.slots["mmlite_shop_n3"] = SlotState(plugin: "mmlite", active: true)
        var script = JoinScript(joinRequest(try threeNodeConfig()))
        let outcome = script.run(JoinProcedure.Observation(states: states, tables: [users]))
        #expect(outcome == .stopped(lines: ["mmlite join: n1: slot mmlite_shop_n3 is in use; is another join running?", "Nothing was changed."], changed: false))
    }

    @Test("resumed after phase 5 (the copy committed: the marker has progress): straight to the wiring")
    func resumeAfterCopy() throws {
        let states = JoinScript.afterCopy(try runningTwoOfThree())
        var script = JoinScript(joinRequest(try threeNodeConfig()))
        let outcome = script.run(JoinProcedure.Observation(states: states, tables: [users], copyMark: LSN("0/3000")))
        #expect(outcome == .done)
        #expect(script.said.first == "Resuming join of n3 to mesh \"shop\" (2 members, 1 table): the copy is done.")
        #expect(script.phases.count == 2 && script.phases[0].hasPrefix("subscriptions of n3"), "\(script.phases)")
        #expect(!script.work.contains { if case .copy = $0 { return true } else { return false } })
        #expect(!script.work.contains { if case .createSlot = $0 { return true } else { return false } })
    }

    @Test("resumed after phase 6 (wired): only the catch-up and the marker are left")
    func resumeAfterWiring() throws {
        let config = try threeNodeConfig()
        var states = freshStates()
        simulate(try Planner(config: config, tables: [users]).plan(states: states), on: &states, tables: [users])
        var script = JoinScript(joinRequest(config))
        #expect(script.run(JoinProcedure.Observation(states: states, tables: [users], copyMark: LSN("0/3000")), mesh: states) == .done)
        #expect(script.phases == ["wait until n3 has caught up with every member"])
        #expect(!script.work.contains { if case .run = $0 { return true } else { return false } })
        #expect(script.work.contains(.dropOrigin(node: "n3", origin: "mmlite_shop_copy")))
    }

    @Test("a member's slot for NODE gone after the copy: stop, say how to start over")
    func slotMissingAfterCopy() throws {
        let states = try runningTwoOfThree()
        var script = JoinScript(joinRequest(try threeNodeConfig()))
        let outcome = script.run(JoinProcedure.Observation(states: states, tables: [users], copyMark: LSN("0/3000")), mesh: states)
        guard case .stopped(let lines, _) = outcome else { Issue.record("\(outcome)"); return }
        #expect(lines[0].contains("slot mmlite_shop_n3 is missing after the copy") && lines[0].contains("mmlite part n3"))
    }

    @Test("a failure while SOURCE's subscriptions are paused enables them again, then stops part-way")
    func failureDuringPause() throws {
        var script = JoinScript(joinRequest(try threeNodeConfig())) { action in
            if case .exportSnapshot = action { return .failed("connection lost") }
            return nil
        }
        let outcome = script.run(JoinProcedure.Observation(states: try runningTwoOfThree(), tables: [users]))
        #expect(script.work.suffix(2).first == .enableSubscription(node: "n1", subscription: "mmlite_shop_from_n2"))
        guard case .stopped(let lines, let changed) = outcome else { Issue.record("\(outcome)"); return }
        #expect(changed, "n2's slot for n3 was created")
        #expect(lines == ["mmlite join: connection lost",
                          "join stopped part-way. Fix the cause, then run `mmlite join n3 --from n1` again: it continues from what exists (an unfinished copy is redone)."])
    }

    @Test("a wait that times out stops with what was left")
    func timeout() throws {
        var script = JoinScript(joinRequest(try threeNodeConfig())) { action in
            if case .wait(.slotConfirmed(_, "mmlite_shop_n1", _, _)) = action { return .timedOut("3 MB to go") }
            return nil
        }
        let outcome = script.run(JoinProcedure.Observation(states: try runningTwoOfThree(), tables: [users]))
        guard case .stopped(let lines, true) = outcome else { Issue.record("\(outcome)"); return }
        #expect(lines[0] == "mmlite join: timed out after 60 s waiting for n1 applied n2 up to 0/1000 (3 MB to go)")
    }

    @Test("refusals change nothing: from itself, unreachable node, source not a member, mesh not running, failed check, rows on NODE")
    func refusals() throws {
        let config = try threeNodeConfig()
        let states = try runningTwoOfThree()
        func outcome(_ request: JoinProcedure.Request, _ observation: JoinProcedure.Observation, checks: [CheckResult] = []) -> (ProcedureOutcome, [JoinProcedure.Action]) {
            var script = JoinScript(request)
            let result = script.run(observation, checks: checks)
            return (result, script.work)
        }
        func onlyReads(_ actions: [JoinProcedure.Action]) -> Bool {
            actions.allSatisfy { action in
                switch action {
                case .observe, .check, .finish: return true
                default: return false
                }
            }
        }
        let base = JoinProcedure.Observation(states: states, tables: [users])

        let itself = outcome(joinRequest(config, source: "n3"), base)
        #expect(itself.0 == .refused(.usage, lines: ["mmlite: n3 cannot join from itself; --from names a member of the mesh"]))

        var down = base
        down.unreachable = ["n2": "connection refused"]
        let unreachable = outcome(joinRequest(config), down)
        guard case .refused(.unreachable, let lines, _) = unreachable.0 else { Issue.record("\(unreachable.0)"); return }
        #expect(lines.first == "mmlite: cannot connect to n2 (host=h2 dbname=shop): connection refused")
        #expect(onlyReads(unreachable.1))

        let pendingSource = outcome(joinRequest(config, node: "n2", source: "n3"), base)
        #expect(pendingSource.0 == .refused(.failedCheck, lines: ["mmlite: n3 is not a member of mesh \"shop\" (members: n1, n2); --from must name one"]))

        let fresh = outcome(joinRequest(config), JoinProcedure.Observation(states: freshStates(), tables: [users]))
        guard case .refused(.failedCheck, let freshLines, _) = fresh.0 else { Issue.record("\(fresh.0)"); return }
        #expect(freshLines[0].contains("is not running yet"))

        let failed = CheckResult(node: "n3", check: "wal_level", status: .failure, message: "wal_level is replica")
        let checked = outcome(joinRequest(config), base, checks: [failed, CheckResult(node: "n1", check: "x", status: .warning, message: "w")])
        #expect(checked.0 == .refused(.failedCheck, lines: ["mmlite join: 1 check failed; nothing was changed."], checks: [failed]))
        #expect(onlyReads(checked.1))

        var rows = base
        rows.nonEmptyOnNode = [users]
        let nonEmpty = outcome(joinRequest(config), rows)
        guard case .refused(.failedCheck, let rowLines, _) = nonEmpty.0 else { Issue.record("\(nonEmpty.0)"); return }
        #expect(rowLines[0] == "mmlite join: n3 already has rows in public.users; nothing was changed.")
        #expect(onlyReads(nonEmpty.1))

        // --force empties them in the copy's transaction.
        var forced = JoinScript(joinRequest(config, force: true))
        #expect(forced.run(rows) == .done)
        #expect(forced.work.contains { if case .copy(let copy) = $0 { return copy.emptied == [users] && copy.truncated == [users] } else { return false } })

        var problems = base
        problems.conflictProblems = ["public.users has no primary key"]
        let conflicts = outcome(joinRequest(config), problems)
        #expect(conflicts.0 == .refused(.failedCheck, lines: ["mmlite join: conflict handling: public.users has no primary key", "Nothing was changed."]))
    }

    @Test("conflict handling: refused while a member's objects differ from the file; installed on NODE before the checks; versions copied")
    func conflictHandling() throws {
        let config = try MeshConfig.parse("""
            [mesh]
            name = "shop"
            tables = ["public.users"]
            [tables."public.users"]
            conflicts = "last-update-wins"
            [[nodes]]
            name = "n1"
            dsn = "host=h1 dbname=shop"
            [[nodes]]
            name = "n2"
            dsn = "host=h2 dbname=shop"
            [[nodes]]
            name = "n3"
            dsn = "host=h3 dbname=shop"
            """)
        let table = ConflictSQL.Table(name: users, columns: [ConflictSQL.Column(name: "id", type: "integer", keyPosition: 1),
                                                             ConflictSQL.Column(name: "name", type: "text", keyPosition: nil)],
                                      policy: .lastUpdateWins)
        let installed = [table.registryName: ConflictSQL.definition(table)]
        var observation = JoinProcedure.Observation(states: try runningTwoOfThree(), tables: [users], conflictTables: [table],
                                                    conflictRegistries: ["n1": installed])
        var outdated = JoinScript(joinRequest(config))
        #expect(outdated.run(observation) == .refused(.failedCheck, lines: [
            "mmlite join: conflict handling on n2 differs from mmlite.toml; nothing was changed.",
            "Run `mmlite apply` first (it leaves n3 out), then join."]))

        observation.conflictRegistries["n2"] = installed
        var script = JoinScript(joinRequest(config))
        #expect(script.run(observation) == .done)
        let install = try #require(script.index { if case .run(let step) = $0 { return step.kind == .installConflicts && step.node == "n3" } else { return false } })
        let rights = try #require(script.index { if case .check = $0 { return true } else { return false } })
        let check = try #require(script.actions.lastIndex { if case .check = $0 { return true } else { return false } })
        #expect(rights < install && install < check, "rights checked before anything is installed; probes after")
        #expect(script.work.contains { if case .copy(let copy) = $0 {
            return copy.tables == [users, ConflictSQL.versionTable(users)] && copy.truncated == [ConflictSQL.versionTable(users)]
        } else { return false } })
    }

    @Test("--copy-schema creates the missing tables first and observes again")
    func copySchema() throws {
        var request = joinRequest(try threeNodeConfig())
        request.copySchema = true
        var script = JoinScript(request)
        #expect(script.run(JoinProcedure.Observation(states: try runningTwoOfThree(), tables: [users], missingOnNode: [users])) == .done)
        #expect(Array(script.work.prefix(3)) == [.observe, .createSchema(tables: [users], from: "n1", on: "n3"), .observe])
        // Without it, the checks report the missing table (the runner's checks do); nothing is created.
        var plain = JoinScript(joinRequest(try threeNodeConfig()))
        _ = plain.run(JoinProcedure.Observation(states: try runningTwoOfThree(), tables: [users], missingOnNode: [users]))
        #expect(!plain.work.contains { if case .createSchema = $0 { return true } else { return false } })
    }

    @Test("the dry run drives the same machine: the same actions as a real run, with placeholders, and no progress lines")
    func dryRunIsTheSameProcedure() throws {
        let config = try threeNodeConfig()
        let observation = JoinProcedure.Observation(states: try runningTwoOfThree(), tables: [users])
        var real = JoinScript(joinRequest(config))
        _ = real.run(observation)
        var dry = JoinScript(joinRequest(config, dryRun: true))
        dry.answer = { [procedure = dry.procedure] action in
            switch action {
            case .observe, .check: return nil
            default: return procedure.simulatedEvent(for: action)
            }
        }
        #expect(dry.run(observation) == .done)
        func shape(_ actions: [JoinProcedure.Action]) -> [String] {
            actions.map { action in
                switch action {
                case .run(let step): return "run \(step.node) \(step.kind)"
                default: return String(describing: action).prefix { $0 != "(" }.description
                }
            }
        }
        #expect(shape(dry.work) == shape(real.work))
        #expect(dry.said == ["Plan to join n3 to mesh \"shop\" from n1 (2 members, 1 table). Dry run: nothing is changed."])
        let names = config.names
        let shown = dry.work.flatMap { $0.statements(names: names) }
        #expect(shown.contains(ShownStatement("n2", "SELECT pg_replication_slot_advance('mmlite_shop_n3', 'R_n2')")))
        #expect(shown.contains(ShownStatement("n3", "SELECT pg_replication_origin_xact_setup('CONSISTENT_POINT', now())")))
        #expect(shown.contains { $0.node == "n3" && $0.sql.hasPrefix("CREATE SUBSCRIPTION mmlite_shop_from_n1 CONNECTION 'host=h1 dbname=shop'") })
    }
}
