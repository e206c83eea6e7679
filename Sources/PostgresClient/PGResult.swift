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

    /// Rows affected by INSERT/UPDATE/DELETE/COPY..., from the command tag.
    public var affectedRows: Int? {
        commandTag.split(separator: " ").last.flatMap { Int($0) }
    }
}
