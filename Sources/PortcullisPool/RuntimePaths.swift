import Foundation
import PortcullisCore

/// Files the master keeps in its runtime directory, which the CLI reads to find it.
public struct RuntimePaths: Sendable {
    public let directory: String
    public var pidFile: String { directory + "/portcullis.pid" }
    public var stateFile: String { directory + "/state.json" }
    /// Desired worker count written by `portcullis scale` before it signals the master.
    public var scaleFile: String { directory + "/scale" }
    /// Everything generation `generation` runs on (config, rule and key files), one file.
    public func bundleFile(generation: Int) -> String { directory + "/bundle.generation-\(generation).json" }

    public init(directory: String) { self.directory = directory }
    public init(config: GatewayConfig) { self.directory = config.server.runtimeDirectory }
}

extension RuntimePaths {
    /// Finds the runtime directory named by a config file without validating the rest of it,
    /// so `stop` and `status` work even while the file on disk is broken.
    public static func locate(configPath: String) -> RuntimePaths {
        let base = (configPath as NSString).deletingLastPathComponent
        let resolve = { (p: String) in p.hasPrefix("/") ? p : (base.isEmpty ? "." : base) + "/" + p }
        if let data = FileManager.default.contents(atPath: configPath),
           let json = try? JSONCodec.parse(Array(data), rejectDuplicateKeys: false),
           let dir = json["server"]?["runtime_dir"]?.stringValue, !dir.isEmpty {
            return RuntimePaths(directory: resolve(dir))
        }
        return RuntimePaths(directory: resolve(ServerSettings().runtimeDirectory))
    }

    /// The running master's pid, if its pid file names a live process.
    public func runningMasterPid() -> pid_t? {
        guard let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
              let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0, Self.isAlive(pid) else { return nil }
        return pid
    }

    /// True while `pid` runs; an exited process its parent has not reaped yet (a zombie) counts
    /// as gone.
    public static func isAlive(_ pid: pid_t) -> Bool {
        guard kill(pid, 0) == 0 else { return false }
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return true }
        let state = stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).first
        return state != "Z" && state != "X"
    }

    public func readState() -> JSONValue? {
        guard let data = FileManager.default.contents(atPath: stateFile) else { return nil }
        return try? JSONCodec.parse(Array(data), rejectDuplicateKeys: false)
    }
}
