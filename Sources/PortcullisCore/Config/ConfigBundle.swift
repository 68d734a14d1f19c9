import Foundation

/// Everything one configuration generation runs on, read once: the config file's bytes and
/// every file and directory listing the loaders asked for while validating it. The master
/// writes it as one file per generation; workers (at start, on respawn and on reload) load
/// from it alone, so every worker of a generation serves the same rules and keys whatever
/// happened on disk since.
public struct ConfigBundle: ConfigFiles, Sendable, Equatable {
    /// The config file's path: relative paths inside it and error messages refer to it.
    public let configPath: String
    public let configBytes: [UInt8]
    public private(set) var files: [String: [UInt8]]
    public private(set) var directories: [String: [String]]

    public init(configPath: String, configBytes: [UInt8], files: [String: [UInt8]] = [:], directories: [String: [String]] = [:]) {
        self.configPath = configPath
        self.configBytes = configBytes
        self.files = files
        self.directories = directories
    }

    public func contents(_ path: String) -> [UInt8]? { files[path] }
    public func regularFiles(in directory: String) -> [String]? { directories[directory] }

    public mutating func record(file path: String, bytes: [UInt8]) { files[path] = bytes }
    public mutating func record(directory path: String, names: [String]) { directories[path] = names }

    /// The bundle as one JSON document (file contents in base64), for the runtime directory.
    public func encoded() -> [UInt8] {
        let fileList = files.keys.sorted().map { path in
            (path, JSONValue.string(Data(files[path]!).base64EncodedString()))
        }
        let directoryList = directories.keys.sorted().map { path in
            (path, JSONValue.array(directories[path]!.map { .string($0) }))
        }
        let document = JSONObject([
            ("format", .int(1)), ("config_path", .string(configPath)),
            ("config", .string(Data(configBytes).base64EncodedString())),
            ("files", .object(JSONObject(fileList))), ("directories", .object(JSONObject(directoryList))),
        ])
        return JSONCodec.serializeBytes(.object(document))
    }

    /// Reads what `encoded()` wrote; nil if `bytes` is not such a document.
    public static func decode(_ bytes: [UInt8]) -> ConfigBundle? {
        guard let document = try? JSONCodec.parse(bytes, rejectDuplicateKeys: true), document["format"]?.intValue == 1,
              let path = document["config_path"]?.stringValue,
              let config = document["config"]?.stringValue.flatMap({ Data(base64Encoded: $0) }),
              let fileObject = document["files"]?.objectValue, let directoryObject = document["directories"]?.objectValue
        else { return nil }
        var bundle = ConfigBundle(configPath: path, configBytes: Array(config))
        for (filePath, value) in fileObject.entries {
            guard let data = value.stringValue.flatMap({ Data(base64Encoded: $0) }) else { return nil }
            bundle.record(file: filePath, bytes: Array(data))
        }
        for (directory, value) in directoryObject.entries {
            guard let names = value.arrayValue?.compactMap(\.stringValue) else { return nil }
            bundle.record(directory: directory, names: names)
        }
        return bundle
    }
}
