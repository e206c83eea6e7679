public enum MMLiteCore { public static let version = "0.1.0" }
