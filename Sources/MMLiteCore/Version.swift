import CMMLiteVersion
import Foundation

/// The version of this mmlite build: the text of the repository's VERSION
/// file (the only place it is written), embedded by the C target CMMLiteVersion.
public enum MMLiteCore {
    public static let version = String(cString: mmlite_core_version()).trimmingCharacters(in: .whitespacesAndNewlines)
}
