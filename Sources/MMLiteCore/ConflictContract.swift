/// What the native apply trigger of mmlite.so (plugin/Sources/CMMLite/mmlite_apply.c)
/// relies on in the objects ConflictSQL generates. Its C side is
/// plugin/Sources/CMMLite/include/mmlite_contract.h; the two are written in
/// two languages, and Tests/MMLiteCoreTests/ConflictContractTests.swift fails
/// when they (or the generated SQL) differ.
public enum ConflictContract {
    /// The change table's columns that carry the change itself, in table
    /// order (user columns keep their own names next to them). The native
    /// trigger reads all of them but `mm_id`, the change row's identity.
    public static let changeColumns = ["mm_node", "mm_id", "mm_op", "mm_v_ms", "mm_v_counter", "mm_prev_ms", "mm_prev_counter", "mm_prev_node"]
    /// Change table columns the native trigger does not read.
    public static let changeColumnsNotReadNatively: Set<String> = ["mm_id"]
    /// The version table's columns besides the key columns, in table order.
    public static let versionColumns = ["v_ms", "v_counter", "v_node", "op", "changed_at", "prev_ms", "prev_counter", "prev_node", "prev_op"]
    /// Where a table's change and version tables are: schema `mmlite`, named
    /// "schema.table" with these suffixes. The output plugin pairs a change
    /// message with the version row written before it by these names.
    public static let schema = "mmlite"
    public static let changesSuffix = "$changes"
    public static let versionsSuffix = "$versions"
    /// The values of `mm_op` and of the version table's `op` (a `delete` version is a tombstone).
    public static let opNames = ["insert", "update", "delete"]
    /// The arguments of `mmlite.apply_change()` in the trigger that runs it:
    /// user table, version table, SQL apply function, node name.
    public static let nativeApplyArgumentCount = 4
    /// The fixed arguments of `mmlite.capture_change()`: version table, change
    /// table, SQL capture function, node name; the writable columns follow.
    public static let nativeCaptureFixedArgumentCount = 4
}
