import ClusterHarness
import Foundation
#if canImport(Glibc)
import Glibc
#endif

// MARK: time

/// Seconds on a monotonic clock.
func monotonicSeconds() -> Double {
    var spec = timespec()
    clock_gettime(CLOCK_MONOTONIC, &spec)
    return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
}

/// Runs `body` and returns how long it took, in seconds.
func timed(_ body: () throws -> Void) rethrows -> Double {
    let start = monotonicSeconds()
    try body()
    return monotonicSeconds() - start
}

/// CPU seconds (user + system) a process has used so far, from
/// /proc/PID/stat; nil when it cannot be read (the process ended, not Linux).
func processCPUSeconds(_ pid: Int) -> Double? {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return nil }
    // After "pid (comm)": field 3 (state) onwards; utime and stime are fields 14 and 15.
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// CPU seconds used so far by the server processes a query on `node` names
/// (one `pid` column), summed; nil when it names none.
func serverCPUSeconds(_ node: Cluster, pids sql: String) throws -> Double? {
    let listed = (try node.scalar("SELECT string_agg(pid::text, ' ') FROM (\(sql)) p") ?? "").split(separator: " ").compactMap { Int($0) }
    let seconds = listed.compactMap(processCPUSeconds)
    return seconds.isEmpty ? nil : seconds.reduce(0, +)
}

func sleepSeconds(_ seconds: Double) {
    if seconds > 0 { usleep(UInt32(seconds * 1_000_000)) }
}

// MARK: statistics

/// Median, min and max of several runs.
struct Stat: Codable {
    var values: [Double]
    init(_ values: [Double]) { self.values = values }
    var isEmpty: Bool { values.isEmpty }
    var median: Double {
        let sorted = values.sorted()
        guard !sorted.isEmpty else { return .nan }
        let middle = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
    }
    var min: Double { values.min() ?? .nan }
    var max: Double { values.max() ?? .nan }
}

func geometricMean(_ values: [Double]) -> Double {
    let positive = values.filter { $0 > 0 && $0.isFinite }
    guard !positive.isEmpty else { return .nan }
    return exp(positive.map { log($0) }.reduce(0, +) / Double(positive.count))
}

// MARK: formatting

func fmt(_ value: Double, _ digits: Int = 2) -> String {
    guard value.isFinite else { return "n/a" }
    return String(format: "%.\(digits)f", value)
}

/// 12345678 -> "12.3 M", 12345 -> "12.3 k".
func human(_ value: Double) -> String {
    guard value.isFinite else { return "n/a" }
    if abs(value) >= 1e6 { return String(format: "%.2f M", value / 1e6) }
    if abs(value) >= 1e4 { return String(format: "%.1f k", value / 1e3) }
    return String(format: "%.0f", value)
}

/// 500000 -> "500k", 1000000 -> "1M", 50000 -> "50k".
func compact(_ value: Int) -> String {
    if value >= 1_000_000 && value % 100_000 == 0 { return value % 1_000_000 == 0 ? "\(value / 1_000_000)M" : String(format: "%.1fM", Double(value) / 1e6) }
    if value >= 1000 && value % 1000 == 0 { return "\(value / 1000)k" }
    return String(value)
}

func bytesHuman(_ value: Double) -> String {
    guard value.isFinite else { return "n/a" }
    if value >= 1_048_576 { return String(format: "%.1f MB", value / 1_048_576) }
    if value >= 1024 { return String(format: "%.0f kB", value / 1024) }
    return String(format: "%.0f B", value)
}

/// "median (min–max)".
func mmm(_ stat: Stat, _ digits: Int = 2, _ transform: (Double) -> String = { fmt($0, 2) }) -> String {
    guard !stat.isEmpty else { return "n/a" }
    if stat.values.count == 1 { return transform(stat.median) }
    return "\(transform(stat.median)) (\(transform(stat.min))–\(transform(stat.max)))"
}

// MARK: logging

/// Progress on stderr, so stdout keeps the report and the summary lines.
func say(_ message: String) {
    let elapsed = Int(monotonicSeconds() - benchStart)
    FileHandle.standardError.write(Data(("[\(elapsed / 60)m\(String(format: "%02d", elapsed % 60))s] " + message + "\n").utf8))
}

/// When this process started (for the progress lines).
let benchStart = monotonicSeconds()

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

// MARK: processes

typealias Child = ChildProcess

/// Runs a command to completion; returns (exit code, stdout, stderr).
func runProgram(_ arguments: [String], workDirectory: String, environment: [String: String] = [:]) throws -> (code: Int32, out: String, err: String) {
    let stem = workDirectory + "/cmd-\(UInt32.random(in: 0..<UInt32.max))"
    let child = try Child(arguments, outputPath: stem + ".out", errorPath: stem + ".err", environment: environment)
    let code = child.wait()
    let result = (code, child.output, child.errorOutput)
    unlink(stem + ".out"); unlink(stem + ".err")
    return result
}

/// Single-quoted for a POSIX shell.
func shellQuote(_ value: String) -> String {
    "'" + value.replacingOccurrences(of: "'", with: "'\\''") + "'"
}

/// Single-quoted SQL literal.
func sqlLiteral(_ value: String) -> String {
    "'" + value.replacingOccurrences(of: "'", with: "''") + "'"
}
