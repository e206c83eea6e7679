/// A WAL position (`pg_lsn`), e.g. "16/B374D848".
public struct LSN: Hashable, Comparable, Sendable, CustomStringConvertible, Codable {
    public var value: UInt64

    public init(_ value: UInt64) { self.value = value }

    /// Parses PostgreSQL's text form: two hex numbers of up to 8 digits each.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2,
              (1...8).contains(parts[0].count), (1...8).contains(parts[1].count),
              let high = UInt64(parts[0], radix: 16), let low = UInt64(parts[1], radix: 16)
        else { return nil }
        value = high << 32 | low
    }

    public static let zero = LSN(0)

    /// Same form as PostgreSQL prints: upper-case hex, no padding.
    public var description: String {
        String(value >> 32, radix: 16, uppercase: true) + "/" + String(value & 0xFFFF_FFFF, radix: 16, uppercase: true)
    }

    public static func < (lhs: LSN, rhs: LSN) -> Bool { lhs.value < rhs.value }

    /// Bytes of WAL from `earlier` to this position; 0 when `earlier` is ahead.
    public func bytes(since earlier: LSN) -> UInt64 {
        value >= earlier.value ? value - earlier.value : 0
    }

    /// Signed difference in bytes (`pg_wal_lsn_diff(self, other)`).
    public func difference(from other: LSN) -> Int64 {
        if value >= other.value {
            let delta = value - other.value
            return delta > UInt64(Int64.max) ? Int64.max : Int64(delta)
        }
        let delta = other.value - value
        return delta > UInt64(Int64.max) ? Int64.min : -Int64(delta)
    }

    public func advanced(by bytes: UInt64) -> LSN {
        let (sum, overflow) = value.addingReportingOverflow(bytes)
        return LSN(overflow ? UInt64.max : sum)
    }

    public init(from decoder: Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let lsn = LSN(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not an LSN: \(text)"))
        }
        self = lsn
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

/// Human-readable byte counts: "0 B", "1.5 kB", "16 MB" (powers of 1024, as
/// `pg_size_pretty`).
public func formatBytes(_ bytes: UInt64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1024 && unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    if unit == 0 { return "\(bytes) B" }
    let rounded = (value * 10).rounded() / 10
    let text = rounded == rounded.rounded() ? String(Int(rounded)) : String(rounded)
    return "\(text) \(units[unit])"
}
