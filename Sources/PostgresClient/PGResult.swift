/// A fully read query result, all values in PostgreSQL's text format.
public struct PGResult: Sendable {
    public var columns: [String]
    public var rows: [[String?]]
    /// e.g. "INSERT 0 1", "SELECT 3".
    public var commandTag: String

    public init(columns: [String], rows: [[String?]], commandTag: String) {
        self.columns = columns
        self.rows = rows
        self.commandTag = commandTag
    }

    public var isEmpty: Bool { rows.isEmpty }
    public var count: Int { rows.count }

    /// First column of the first row; nil when there is no row or it is NULL.
    public var scalar: String? { rows.first?.first ?? nil }

    public func columnIndex(_ name: String) -> Int? { columns.firstIndex(of: name) }

    /// Rows as dictionaries keyed by column name.
    public var records: [[String: String?]] {
        rows.map { row in
            var record: [String: String?] = [:]
            for (index, column) in columns.enumerated() where index < row.count {
                record[column] = row[index]
            }
            return record
        }
    }

    /// Value at row `row` of column `column`; nil if NULL or absent.
    public func value(_ row: Int, _ column: String) -> String? {
        guard row >= 0, row < rows.count, let index = columnIndex(column), index < rows[row].count
        else { return nil }
        return rows[row][index]
    }

    /// The rows, read by column name.
    public var named: [PGRow] {
        let index = Dictionary(columns.enumerated().map { ($0.element, $0.offset) }, uniquingKeysWith: { first, _ in first })
        return rows.map { PGRow(index: index, values: $0) }
    }

    /// The first row, read by column name.
    public var first: PGRow? { named.first }

    /// Rows affected by INSERT/UPDATE/DELETE/COPY..., from the command tag.
    public var affectedRows: Int? {
        commandTag.split(separator: " ").last.flatMap { Int($0) }
    }
}

/// One row of a result, read by column name (the query names its columns).
public struct PGRow: Sendable {
    let index: [String: Int]
    public let values: [String?]

    /// The value of column `name`; nil if NULL. A name the query does not
    /// return is a programming error, reported by `has`.
    public subscript(_ name: String) -> String? {
        guard let position = index[name], position < values.count else { return nil }
        return values[position]
    }

    public func has(_ name: String) -> Bool { index[name] != nil }
    public func bool(_ name: String) -> Bool? { self[name].map { $0 == "t" } }
    public func int(_ name: String) -> Int? { self[name].flatMap { Int($0) } }
    public func int64(_ name: String) -> Int64? { self[name].flatMap { Int64($0) } }
    public func double(_ name: String) -> Double? { self[name].flatMap { Double($0) } }
}
