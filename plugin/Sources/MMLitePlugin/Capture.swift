// The clock rule of the native capture trigger (mmlite_capture.c).

import CMMLite

/// A local write's version (docs/conflicts.md, "Versions"): `now_ms` when the
/// clock is past the version it replaces, else that version's ms with the
/// counter one up, so a write is always above the version it overwrites
/// (a causally later write never loses), whatever this node's clock says.
/// The same rule as the generated SQL capture function. False, with nothing
/// set, when the counter would overflow `integer` (SQL raises there too).
@_cdecl("mmlite_swift_next_version")
func mmliteSwiftNextVersion(
    _ nowMs: Int64, _ replaces: Bool, _ replacedMs: Int64, _ replacedCounter: Int32,
    _ ms: UnsafeMutablePointer<Int64>?, _ counter: UnsafeMutablePointer<Int32>?
) -> Bool {
    guard let ms, let counter else { return false }
    guard replaces, nowMs <= replacedMs else {
        ms.pointee = nowMs
        counter.pointee = 0
        return true
    }
    let (next, overflow) = replacedCounter.addingReportingOverflow(1)
    if overflow { return false }
    ms.pointee = replacedMs
    counter.pointee = next
    return true
}
