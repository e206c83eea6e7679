import Foundation
import MMLiteCore
import PostgresClient

/// The I/O every runner of a multi-node procedure (join, part) shares:
/// polling a `WaitCondition`, numbered phases with their times, clocks, and
/// turning a `ProcedureOutcome` into output and an exit code.
final class ProcedureIO {
    let console: Console
    let hooks: Hooks
    let timeout: Double
    let dryRun: Bool
    private var phaseStarted = Date()
    private var phaseTitle = ""
    private(set) var timings: [Double] = []
    private var clocks: [String: Date] = [:]

    init(context: Context, timeout: Double, dryRun: Bool) {
        console = context.console
        hooks = context.hooks
        self.timeout = timeout
        self.dryRun = dryRun
    }

    /// Polls `condition` on `connection` until it holds; the event for the procedure.
    func wait<Event>(_ condition: WaitCondition, on connection: PGConnection,
                     done: Event, timedOut: (String) -> Event, failed: (String) -> Event) throws -> Event {
        let started = Date()
        var lastPrint = Date()
        while true {
            switch condition.progress(try connection.query(condition.query).scalar) {
            case .done:
                return done
            case .failed(let message):
                return failed(message)
            case .pending(_, let left):
                if Date().timeIntervalSince(started) > timeout { return timedOut(left) }
                if Date().timeIntervalSince(lastPrint) >= 5 {
                    console.print(String(format: "    waiting for %@: %@ (%.0f s)", condition.what, left, Date().timeIntervalSince(started)))
                    lastPrint = Date()
                }
            }
            usleep(50_000)
        }
    }

    func beginPhase(_ number: Int, _ title: String) {
        if dryRun {
            console.print()
            console.print("-- \(number). \(title)")
        } else {
            console.print("[\(number)] \(title)")
        }
        phaseStarted = Date()
        phaseTitle = title
    }

    func endPhase(_ number: Int) {
        guard !dryRun else { return }
        let seconds = Date().timeIntervalSince(phaseStarted)
        timings.append(seconds)
        console.print(String(format: "    done in %.2f s", seconds))
        hooks.afterPhase?(number, phaseTitle)
    }

    func startClock(_ name: String) { clocks[name] = Date() }

    func sayElapsed(_ format: String, clock: String) {
        console.print(String(format: format, String(format: "%.2f", Date().timeIntervalSince(clocks[clock] ?? Date()))))
    }

    /// "1) 0.12 s, 2) 3.40 s"
    var phaseTimes: String {
        timings.enumerated().map { String(format: "%d) %.2f s", $0.offset + 1, $0.element) }.joined(separator: ", ")
    }

    /// Prints `statements` the way a dry run shows an action.
    func show(_ statements: [ShownStatement]) {
        for statement in statements { console.print(statement.text) }
    }

    /// Prints how a procedure ended; its exit code.
    func conclude(_ outcome: ProcedureOutcome, config: MeshConfig) -> ExitStatus {
        switch outcome {
        case .done:
            return .ok
        case .refused(let refusal, let lines, let checks):
            for line in lines { console.error(line) }
            if !checks.isEmpty {
                var text: [String] = []
                let buffer = Console(out: { text.append($0) }, err: { text.append($0) })
                buffer.addSecrets(config.secrets)
                printChecks(checks, config: config, console: buffer)
                console.error(text.joined().trimmingCharacters(in: .newlines))
            }
            switch refusal {
            case .usage: return .usage
            case .unreachable: return .unavailable
            case .failedCheck: return .failure
            }
        case .stopped(let lines, let changed):
            for line in lines { console.error(line) }
            return changed ? .partial : .warning
        }
    }
}
