import MMLiteCore
import Testing

@Suite("SQLScript: statements of a migration")
struct SQLScriptTests {
    @Test("splits at semicolons outside quotes, dollar quotes and comments")
    func split() {
        let script = """
            ALTER TABLE t ADD COLUMN a text DEFAULT 'x;y';  -- a comment; with a semicolon
            CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$;
            /* block; /* nested; */ still */ CREATE INDEX CONCURRENTLY i ON "we;ird" (a);
            DO $body$ BEGIN PERFORM 1; END $body$;
            SELECT E'it\\'s; fine';;
            -- only a comment;
            """
        #expect(SQLScript.statements(script) == [
            "ALTER TABLE t ADD COLUMN a text DEFAULT 'x;y'",
            "-- a comment; with a semicolon\nCREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$",
            "/* block; /* nested; */ still */ CREATE INDEX CONCURRENTLY i ON \"we;ird\" (a)",
            "DO $body$ BEGIN PERFORM 1; END $body$",
            "SELECT E'it\\'s; fine'",
        ])
        #expect(SQLScript.statements("  ;  -- nothing\n") == [])
        #expect(SQLScript.statements("SELECT $1, a$b FROM t") == ["SELECT $1, a$b FROM t"], "$1 and a$b are no dollar quotes")
    }
}

/// Drives a `DDLProcedure` with scripted answers.
struct DDLScript {
    var procedure: DDLProcedure
    var actions: [DDLProcedure.Action] = []
    var answer: (DDLProcedure.Action) -> DDLProcedure.Event? = { _ in nil }

    init(_ request: DDLProcedure.Request) { procedure = DDLProcedure(request) }

    mutating func run(_ observation: DDLProcedure.Observation) -> ProcedureOutcome {
        var action = procedure.start()
        for _ in 0..<500 {
            actions.append(action)
            if case .finish(let outcome) = action { return outcome }
            let event: DDLProcedure.Event
            if let scripted = answer(action) {
                event = scripted
            } else {
                switch action {
                case .observe: event = .observed(observation)
                case .readCurrentPosition: event = .position(lsn("0/7000"))
                case .prepare: event = .prepared(DDLProcedure.Prepared())
                default: event = .done
                }
            }
            action = procedure.next(event)
        }
        Issue.record("the procedure did not finish")
        return .done
    }

    var work: [DDLProcedure.Action] { actions.filter { if case .say = $0 { return false } else { return true } } }
    var said: [String] { actions.compactMap { if case .say(let text) = $0 { return text } else { return nil } } }
}

func ddlRequest(_ statements: [String] = ["ALTER TABLE public.users ADD COLUMN note text"], resume: Bool = false) throws -> DDLProcedure.Request {
    DDLProcedure.Request(config: try threeNodeConfig(), statements: statements, resume: resume, id: "m1")
}

func ddlObservation(_ states: [String: NodeState]? = nil) throws -> DDLProcedure.Observation {
    var observation = DDLProcedure.Observation(states: try states ?? runningThree(), tables: [users])
    for node in ["n1", "n2", "n3"] { observation.maxPreparedTransactions[node] = 10 }
    return observation
}

@Suite("DDLProcedure")
struct DDLProcedureTests {
    let gid = "mmlite_ddl_shop_m1"

    @Test("fence every member, drain every link past the fences, prepare everywhere, then commit everywhere")
    func phases() throws {
        var script = DDLScript(try ddlRequest())
        #expect(script.run(try ddlObservation()) == .done)
        let nodes = ["n1", "n2", "n3"]
        let work = script.work
        #expect(Array(work.prefix(4)) == [.observe] + nodes.map { .fence(node: $0, tables: [users]) })
        #expect(work.filter { if case .readCurrentPosition = $0 { return true } else { return false } }.count == 3)
        let waits = work.compactMap { action -> String? in
            if case .wait(.slotConfirmed(let node, let slot, _, _)) = action { return "\(node)/\(slot)" } else { return nil }
        }
        #expect(Set(waits) == Set(["n1/mmlite_shop_n2", "n1/mmlite_shop_n3", "n2/mmlite_shop_n1", "n2/mmlite_shop_n3", "n3/mmlite_shop_n1", "n3/mmlite_shop_n2"]))
        let prepares = work.indices.filter { if case .prepare = work[$0] { return true } else { return false } }
        let commits = work.indices.filter { if case .commitPrepared = work[$0] { return true } else { return false } }
        #expect(prepares.count == 3 && commits.count == 3)
        #expect(prepares.max()! < commits.min()!, "nothing commits before every node prepared")
        #expect(work.last == .finish(.done))
        if case .prepare(let first) = work[prepares[0]] {
            #expect(first.gid == gid && first.unfence == [users] && first.member && first.origin == "mmlite_shop_ddl")
        }
    }

    @Test("a failure on one node before the commit rolls back every prepared node and drops every fence: nothing changed")
    func failureRollsBack() throws {
        var script = DDLScript(try ddlRequest())
        script.answer = { action in
            if case .prepare(let work) = action, work.node == "n2" { return .failed("on n2: relation \"x\" already exists") }
            return nil
        }
        guard case .stopped(let lines, let changed) = script.run(try ddlObservation()) else { Issue.record("not stopped"); return }
        #expect(!changed)
        #expect(lines.contains("Nothing was changed: the migration was rolled back on every node."))
        let afterFailure = script.work.drop { if case .prepare(let w) = $0 { return w.node != "n2" } else { return true } }.dropFirst()
        #expect(Array(afterFailure) == [.rollbackPrepared(node: "n1", gid: gid)]
                + ["n1", "n2", "n3"].map { .unfence(node: $0, tables: [users]) } + [afterFailure.last!])
        #expect(!script.work.contains { if case .commitPrepared = $0 { return true } else { return false } })
    }

    @Test("a drain that times out changes nothing either")
    func drainTimeout() throws {
        var script = DDLScript(try ddlRequest())
        script.answer = { action in if case .wait = action { return .timedOut("1 MB to go") } else { return nil } }
        guard case .stopped(let lines, false) = script.run(try ddlObservation()) else { Issue.record("not stopped unchanged"); return }
        #expect(lines.first?.contains("timed out") == true)
        #expect(!script.work.contains { if case .prepare = $0 { return true } else { return false } })
    }

    @Test("a failure after the first commit: stopped, changed, and --resume is the way on")
    func failureAfterCommit() throws {
        var script = DDLScript(try ddlRequest())
        script.answer = { action in
            if case .commitPrepared(let node, _) = action, node == "n2" { return .failed("connection lost") }
            return nil
        }
        guard case .stopped(let lines, true) = script.run(try ddlObservation()) else { Issue.record("not stopped changed"); return }
        #expect(lines.last?.contains("mmlite ddl --resume") == true)
        #expect(!script.work.contains { if case .rollbackPrepared = $0 { return true } else { return false } }, "never roll back once one node committed")
    }

    @Test("refusals: an unreachable node, an interrupted migration, max_prepared_transactions = 0: nothing runs")
    func refusals() throws {
        var unreachable = try ddlObservation()
        unreachable.unreachable["n3"] = "connection refused"
        var interrupted = try ddlObservation()
        interrupted.prepared["n2"] = [gid]
        var noPrepared = try ddlObservation()
        noPrepared.maxPreparedTransactions["n1"] = 0
        for (observation, expected) in [(unreachable, Refusal.unreachable), (interrupted, .failedCheck), (noPrepared, .failedCheck)] {
            var script = DDLScript(try ddlRequest())
            guard case .refused(let refusal, let lines, _) = script.run(observation) else { Issue.record("not refused"); continue }
            #expect(refusal == expected)
            #expect(lines.contains { $0.hasPrefix("Nothing was changed") })
            #expect(script.work.count == 2, "observe, then finish")
        }
    }

    @Test("statements PostgreSQL runs only outside a transaction run after the commit, on every node in turn; created tables are learnt by every subscription, then unfenced")
    func outsideAndCreated() throws {
        var script = DDLScript(try ddlRequest(["CREATE TABLE public.users2 (id int PRIMARY KEY)", "CREATE INDEX CONCURRENTLY i ON public.users (name)"]))
        let created = QualifiedName(schema: "public", name: "users2")
        script.answer = { action in
            if case .prepare = action { return .prepared(DDLProcedure.Prepared(outside: [1], created: [created])) }
            return nil
        }
        #expect(script.run(try ddlObservation()) == .done)
        let work = script.work
        let lastCommit = work.lastIndex { if case .commitPrepared = $0 { return true } else { return false } }!
        let after = Array(work[(lastCommit + 1)...])
        let refreshes = after.filter { if case .refreshSubscription = $0 { return true } else { return false } }
        #expect(refreshes.count == 6)
        let outside = after.compactMap { if case .runOutside(let node, _) = $0 { return node } else { return nil } }
        #expect(outside == ["n1", "n2", "n3"])
        let firstOutside = after.firstIndex { if case .runOutside = $0 { return true } else { return false } }!
        let unfences = after.indices.filter { if case .unfence(_, [created]) = after[$0] { return true } else { return false } }
        #expect(unfences.count == 3 && unfences.max()! < firstOutside)
        #expect(after.firstIndex { if case .refreshSubscription = $0 { return true } else { return false } }! < unfences.min()!)
    }

    @Test("nodes that did different things (another table created on one) roll back")
    func inconsistent() throws {
        var script = DDLScript(try ddlRequest())
        script.answer = { action in
            if case .prepare(let work) = action, work.node == "n3" {
                return .prepared(DDLProcedure.Prepared(created: [QualifiedName(schema: "public", name: "x")]))
            }
            return nil
        }
        guard case .stopped(_, false) = script.run(try ddlObservation()) else { Issue.record("not rolled back"); return }
        #expect(script.work.filter { if case .rollbackPrepared = $0 { return true } else { return false } }.count == 3)
    }

    @Test("resume: commits what committed anywhere or was prepared everywhere, rolls back the rest; drops fences")
    func resume() throws {
        // Committed on n1, still prepared on n2 and n3: roll forward.
        var forward = try ddlObservation()
        forward.prepared = ["n2": [gid], "n3": [gid]]
        forward.recorded = ["n1": ["m1"]]
        forward.fenced = ["n2": [users]]
        var script = DDLScript(try ddlRequest([], resume: true))
        #expect(script.run(forward) == .done)
        #expect(script.work.contains(.commitPrepared(node: "n2", gid: gid)) && script.work.contains(.commitPrepared(node: "n3", gid: gid)))
        #expect(script.work.contains(.unfence(node: "n2", tables: [users])))
        #expect(!script.work.contains { if case .rollbackPrepared = $0 { return true } else { return false } })

        // Prepared on n1 only, committed nowhere: roll back.
        var back = try ddlObservation()
        back.prepared = ["n1": [gid]]
        var rollback = DDLScript(try ddlRequest([], resume: true))
        #expect(rollback.run(back) == .done)
        #expect(rollback.work.contains(.rollbackPrepared(node: "n1", gid: gid)))
        #expect(!rollback.work.contains { if case .commitPrepared = $0 { return true } else { return false } })

        // Prepared everywhere: commit.
        var all = try ddlObservation()
        all.prepared = ["n1": [gid], "n2": [gid], "n3": [gid]]
        var everywhere = DDLScript(try ddlRequest([], resume: true))
        #expect(everywhere.run(all) == .done)
        #expect(everywhere.work.filter { if case .commitPrepared = $0 { return true } else { return false } }.count == 3)

        // Nothing open.
        var none = DDLScript(try ddlRequest([], resume: true))
        #expect(none.run(try ddlObservation()) == .done)
        #expect(none.said == ["No interrupted migration of mesh \"shop\": nothing to do."])
    }
}
