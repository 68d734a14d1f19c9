import Foundation
import PortcullisCore

/// The one place that reads configuration files from disk (the config file, plugin rule files,
/// `pem_file`, `jwks_file`). Everything it reads is recorded into `bundle`, so what was
/// validated is exactly what a generation's workers run.
public final class DiskConfigFiles: ConfigFiles {
    public private(set) var bundle: ConfigBundle

    /// Reads the config file; throws "cannot read file" when it is missing or unreadable.
    public init(configPath: String) throws(ConfigErrors) {
        guard let data = FileManager.default.contents(atPath: configPath) else {
            throw ConfigErrors([ConfigIssue(file: configPath, pointer: "", message: "cannot read file")])
        }
        bundle = ConfigBundle(configPath: configPath, configBytes: Array(data))
    }

    public func contents(_ path: String) -> [UInt8]? {
        if let known = bundle.contents(path) { return known }
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        bundle.record(file: path, bytes: Array(data))
        return Array(data)
    }

    public func regularFiles(in directory: String) -> [String]? {
        if let known = bundle.regularFiles(in: directory) { return known }
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return nil }
        let base = directory.hasSuffix("/") ? String(directory.dropLast()) : directory
        let regular = names.filter { name in
            var isDirectory: ObjCBool = false
            return FileManager.default.fileExists(atPath: base + "/" + name, isDirectory: &isDirectory) && !isDirectory.boolValue
        }.sorted()
        bundle.record(directory: directory, names: regular)
        return regular
    }
}
