import MMLiteCore
import Testing

/// A running full mesh of n1, n2, n3 over `users`.
func runningThree() throws -> [String: NodeState] {
    var states = freshStates()
    simulate(try Planner(config: try threeNodeConfig(), tables: [users]).plan(states: states), on: &states, tables: [users])
    return states
}

struct PartScript {
    var procedure: PartProcedure
    var actions: [PartProcedure.Action] = []
    var answer: (PartProcedure.Action) -> PartProcedure.Event? = { _ in nil }

    init(_ request: PartProcedure.Request) { procedure = PartProcedure(request) }

    mutating func run(_ observation: PartProcedure.Observation) -> ProcedureOutcome {
        var action = procedure.start()
        for _ in 0..<500 {
            actions.append(action)
            if case .finish(let outcome) = action { return outcome }
            let event: PartProcedure.Event
            if let scripted = answer(action) {
                event = scripted
            } else {
                switch action {
                case .observe: event = .observed(observation)
                case .readTransactionHorizon: event = .horizon("812")
                case .readCurrentPosition: event = .position(lsn("0/5000"))
                case .readAppliedPosition(let node, _): event = .position(lsn(node == "n1" ? "0/5000" : "0/4F00"))
                default: event = .done
                }
            }
            action = procedure.next(event)
        }
        Issue.record("the procedure did not finish")
        return .done
    }

    var work: [PartProcedure.Action] {
        actions.filter { action in
            switch action {
            case .say, .startClock, .sayElapsed: return false
            default: return true
            }
        }
    }

    var said: [String] { actions.compactMap { if case .say(let text) = $0 { return text } else { return nil } } }
}

func partRequest(_ node: String = "n3", force: Bool = false) throws -> PartProcedure.Request {
    PartProcedure.Request(config: try threeNodeConfig(), configPath: "mmlite.toml", node: node, force: force, timeout: 30)
}

@Suite("PartProcedure")
struct PartProcedureTests {
    @Test("a live node: cut, wait for its open transactions and for every other node, then drop everything in order")
    func liveNode() throws {
        var script = PartScript(try partRequest())
        #expect(script.run(PartProcedure.Observation(states: try runningThree())) == .done)
        let from = "mmlite_shop_from_n3"
        let expected: [PartProcedure.Action] = [
            .observe,
            .removeTables(node: "n3", publication: "mmlite_shop", tables: [users]),
            .readTransactionHorizon(node: "n3"),
            .wait(.transactionsEnded(node: "n3", horizon: "812")),
            .readCurrentPosition(node: "n3"),
            .wait(.slotConfirmed(node: "n3", slot: "mmlite_shop_n1", target: lsn("0/5000"), what: "n1 applied n3's changes up to 0/5000")),
            .wait(.slotConfirmed(node: "n3", slot: "mmlite_shop_n2", target: lsn("0/5000"), what: "n2 applied n3's changes up to 0/5000")),
            .disableSubscription(node: "n1", subscription: from),
            .wait(.workerStopped(node: "n1", subscription: from)),
            // No readAppliedPosition: only --force reports it (and it needs EXECUTE on pg_replication_origin_progress).
            .dropSubscription(node: "n1", subscription: from, disable: false),
            .disableSubscription(node: "n2", subscription: from),
            .wait(.workerStopped(node: "n2", subscription: from)),
            .dropSubscription(node: "n2", subscription: from, disable: false),
            .dropSubscription(node: "n3", subscription: "mmlite_shop_from_n1", disable: true),
            .dropSubscription(node: "n3", subscription: "mmlite_shop_from_n2", disable: true),
            .wait(.slotInactive(node: "n3", slot: "mmlite_shop_n1")), .dropSlot(node: "n3", slot: "mmlite_shop_n1"),
            .wait(.slotInactive(node: "n3", slot: "mmlite_shop_n2")), .dropSlot(node: "n3", slot: "mmlite_shop_n2"),
            .dropPublication(node: "n3", publication: "mmlite_shop"),
            .dropOrigin(node: "n3", origin: "mmlite_shop_copy"),
            .wait(.slotInactive(node: "n1", slot: "mmlite_shop_n3")), .dropSlot(node: "n1", slot: "mmlite_shop_n3"),
            .wait(.slotInactive(node: "n2", slot: "mmlite_shop_n3")), .dropSlot(node: "n2", slot: "mmlite_shop_n3"),
            // n3's sequence offset stays taken, on every node that records it.
            .retireSequenceOffset(node: "n3", mesh: "shop", parted: "n3"),
            .retireSequenceOffset(node: "n1", mesh: "shop", parted: "n3"),
            .retireSequenceOffset(node: "n2", mesh: "shop", parted: "n3"),
            .finish(.done),
        ]
        #expect(script.work == expected)
        #expect(script.said.contains("Retired n3's sequence offset 3 on n3, n1, n2: it is never handed out again."))
        #expect(script.said.last == "Done: n3 is no longer part of mesh \"shop\". Remove it from mmlite.toml (apply otherwise reports it as not joined; `mmlite join` adds it again).")
        #expect(!script.said.contains { $0.contains("How far") }, "without --force every node has everything")
        // The statements: a subscription is dropped without touching its remote slot.
        #expect(PartProcedure.Action.dropSubscription(node: "n1", subscription: from, disable: false).statements.map(\.sql)
                == ["ALTER SUBSCRIPTION mmlite_shop_from_n3 SET (slot_name = NONE)", "DROP SUBSCRIPTION mmlite_shop_from_n3"])
    }

    @Test("--force with NODE down: no cut, the others stop reading it and say how far they got")
    func forcedDownNode() throws {
        var states = try runningThree()
        states["n3"] = nil
        var script = PartScript(try partRequest(force: true))
        #expect(script.run(PartProcedure.Observation(states: states, unreachable: ["n3": "connection refused"])) == .done)
        #expect(!script.work.contains { if case .removeTables = $0 { return true } else { return false } })
        #expect(!script.work.contains { if case .readCurrentPosition = $0 { return true } else { return false } })
        #expect(!script.work.contains { $0.statements.contains { $0.node == "n3" } })
        #expect(script.said.contains("  n1: up to n3's WAL position 0/5000"))
        #expect(script.said.contains("Changes n3 committed after 0/4F00 may never have left it, or reached only some nodes (which then differ in those rows)."))
        #expect(script.said.contains("If n3's data directory still exists, compare those rows by hand before reusing it."))
    }

    @Test("refusals: NODE down without --force, another node down; nothing is changed")
    func refusals() throws {
        var states = try runningThree()
        states["n3"] = nil
        var down = PartScript(try partRequest())
        let refused = down.run(PartProcedure.Observation(states: states, unreachable: ["n3": "connection refused"]))
        guard case .refused(.unreachable, let lines, _) = refused else { Issue.record("\(refused)"); return }
        #expect(lines[0] == "mmlite part: cannot connect to n3: connection refused")
        #expect(lines[1].contains("`mmlite part n3 --force`"))
        #expect(down.work == [.observe, .finish(refused)])

        var other = PartScript(try partRequest(force: true))
        var two = try runningThree()
        two["n2"] = nil
        let otherDown = other.run(PartProcedure.Observation(states: two, unreachable: ["n2": "timeout"]))
        guard case .refused(.unreachable, let otherLines, _) = otherDown else { Issue.record("\(otherDown)"); return }
        #expect(otherLines[0] == "mmlite: cannot connect to n2: timeout")
        #expect(other.work.count == 2)
    }

    @Test("a re-run after the cut, after the others unsubscribed, after everything: each finishes what is left")
    func resumption() throws {
        // Cut done (the tables are out of the publication): no second ALTER PUBLICATION.
        var cut = try runningThree()
        cut["n3"]!.publication = PublicationState(tables: [])
        var afterCut = PartScript(try partRequest())
        #expect(afterCut.run(PartProcedure.Observation(states: cut)) == .done)
        #expect(!afterCut.work.contains { if case .removeTables = $0 { return true } else { return false } })
        #expect(afterCut.work.contains(.readTransactionHorizon(node: "n3")))

        // The others dropped their subscriptions: nothing to wait for or disable.
        var unsubscribed = cut
        for other in ["n1", "n2"] { unsubscribed[other]!.subscriptions["mmlite_shop_from_n3"] = nil }
        var afterUnsubscribe = PartScript(try partRequest())
        #expect(afterUnsubscribe.run(PartProcedure.Observation(states: unsubscribed)) == .done)
        #expect(!afterUnsubscribe.work.contains { if case .disableSubscription = $0 { return true } else { return false } })
        #expect(afterUnsubscribe.said.contains("  n1: does not subscribe to n3"))
        #expect(afterUnsubscribe.work.contains(.dropPublication(node: "n3", publication: "mmlite_shop")))

        // Everything gone already: only the marker origin (harmless when absent) and the report.
        var gone = freshStates()
        gone["n3"] = NodeState(name: "n3", versionNumber: 150020)
        var nothing = PartScript(try partRequest())
        #expect(nothing.run(PartProcedure.Observation(states: gone)) == .done)
        #expect(nothing.work.filter { !$0.statements.isEmpty } == [.dropOrigin(node: "n3", origin: "mmlite_shop_copy")])
    }

    @Test("a node that does not catch up in time: stop before dropping anything, say what to do")
    func timeout() throws {
        var script = PartScript(try partRequest())
        script.answer = { action in
            if case .wait(.slotConfirmed(_, "mmlite_shop_n2", _, _)) = action { return .timedOut("2 MB to go") }
            return nil
        }
        let outcome = script.run(PartProcedure.Observation(states: try runningThree()))
        #expect(outcome == .stopped(lines: [
            "mmlite part: n2 has not applied n3's changes up to 0/5000 after 30 s (2 MB to go); nothing was dropped. Look at `mmlite status`, or use --force to drop anyway",
            "part stopped part-way. Fix the cause, then run `mmlite part n3` again: it continues from what exists."], changed: true))
        #expect(!script.work.contains { if case .dropSubscription = $0 { return true } else { return false } })
    }

    @Test("a failed statement stops part-way, with the command to re-run")
    func failure() throws {
        var script = PartScript(try partRequest(force: true))
        script.answer = { action in
            if case .dropPublication = action { return .failed("ERROR: boom") }
            return nil
        }
        let outcome = script.run(PartProcedure.Observation(states: try runningThree()))
        #expect(outcome == .stopped(lines: ["mmlite part: ERROR: boom",
                                            "part stopped part-way. Fix the cause, then run `mmlite part n3 --force` again: it continues from what exists."], changed: true))
    }
}
