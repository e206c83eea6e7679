import MMLiteCore
import Testing

struct SkipScript {
    var procedure: SkipProcedure
    var actions: [SkipProcedure.Action] = []
    var answer: (SkipProcedure.Action) -> SkipProcedure.Event?

    init(dryRun: Bool = false, answer: @escaping (SkipProcedure.Action) -> SkipProcedure.Event? = { _ in nil }) {
        procedure = SkipProcedure(SkipProcedure.Request(node: "n2", peer: "n1", subscription: "mmlite_shop_from_n1",
                                                        slot: "mmlite_shop_n2", dryRun: dryRun, timeout: 30))
        self.answer = answer
    }

    static let failing: PgOutput.Transaction = PgOutput.Transaction(finalLSN: LSN("0/3000")!, xid: 740, commitTime: 0)

    mutating func run() -> SkipProcedure.Outcome {
        var action = procedure.start()
        for _ in 0..<100 {
            actions.append(action)
            if case .finish(let outcome) = action { return outcome }
            let event: SkipProcedure.Event
            if let scripted = answer(action) { event = scripted } else {
                switch action {
                case .waitStopped: event = .stopped(true)
                case .peek: event = .pending(Self.failing)
                case .waitPast: event = .past(reached: true, appliedUpTo: LSN("0/3100"), workerRunning: true)
                default: event = .done
                }
            }
            action = procedure.next(event)
        }
        Issue.record("did not finish")
        return .failed
    }

    var work: [SkipProcedure.Action] {
        actions.filter { if case .say = $0 { return false }; if case .warn = $0 { return false }; return true }
    }
    var lines: [String] {
        actions.compactMap { action in
            switch action {
            case .say(let text), .warn(let text): return text
            default: return nil
            }
        }
    }
}

@Suite("SkipProcedure")
struct SkipProcedureTests {
    @Test("stuck link: disable, wait for the worker, peek, record + skip in one step, enable, wait past it")
    func skip() {
        var script = SkipScript()
        #expect(script.run() == .done)
        #expect(script.work == [.disable, .waitStopped, .peek, .recordAndSkip(SkipScript.failing), .enable,
                                .waitPast(LSN("0/3000")!), .finish(.done)])
        #expect(script.lines.contains("n1 -> n2: Skipped transaction 740 of n1 (commit LSN 0/3000, committed 2000-01-01T00:00:00Z), 0 changes:"))
        #expect(script.lines.contains("  recorded in n2's mmlite.conflicts (kind apply_error_skipped); ALTER SUBSCRIPTION mmlite_shop_from_n1 SKIP (lsn = '0/3000')"))
        #expect(script.lines.last == "n1 -> n2: mmlite_shop_from_n1 is streaming again (applied up to 0/3100).")
    }

    @Test("every failure before the skip is set enables the subscription again and skips nothing")
    func failuresReenable() {
        let cases: [(SkipProcedure.Action, SkipProcedure.Event, SkipProcedure.Outcome)] = [
            (.waitStopped, .stopped(false), .incomplete),
            (.peek, .failed("permission denied"), .failed),
            (.peek, .pending(nil), .done),
            (.recordAndSkip(SkipScript.failing), .failed("disk full"), .failed),
        ]
        for (failing, event, expected) in cases {
            var script = SkipScript { $0 == failing ? event : nil }
            #expect(script.run() == expected, "\(failing)")
            #expect(!script.work.contains { if case .waitPast = $0 { return true } else { return false } }, "\(failing)")
            let reenabled = script.work.lastIndex(of: .enable)
            let failedAt = script.work.firstIndex(of: failing)
            #expect(reenabled != nil && failedAt != nil && reenabled! > failedAt!, "\(failing): enabled again after the failure")
        }
    }

    @Test("the skip set but the worker not past it in time: incomplete, says what to check")
    func notPast() {
        var script = SkipScript { action in
            if case .waitPast = action { return .past(reached: false, appliedUpTo: LSN("0/2000"), workerRunning: false) }
            return nil
        }
        #expect(script.run() == .incomplete)
        #expect(script.lines.last?.contains("has not got past 0/3000 yet (applied up to 0/2000, worker not running)") == true)
    }

    @Test("a dry run only peeks: no disable, no record, no skip")
    func dryRun() {
        var script = SkipScript(dryRun: true)
        #expect(script.run() == .done)
        #expect(script.work == [.peek, .finish(.done)])
        #expect(script.lines.first?.hasPrefix("n1 -> n2: Would skip transaction 740 of n1") == true)
        #expect(script.lines.last?.hasPrefix("  (dry run: nothing changed;") == true)
        var busy = SkipScript(dryRun: true) { $0 == .peek ? .busy : nil }
        #expect(busy.run() == .incomplete)
        #expect(busy.lines == ["mmlite: n1 -> n2: slot mmlite_shop_n2 stayed in use for 30 s; try again"])
    }
}
