import Foundation

/// Names, sizes and modification times of a plugins directory's `*.json` files: cheap to take
/// every second, and different whenever a rule file is added, removed or rewritten.
struct PluginDirectoryFingerprint: Equatable {
    private var files: [String: [Int64]] = [:]

    static func of(_ directory: String) -> PluginDirectoryFingerprint {
        var print = PluginDirectoryFingerprint()
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        for name in names where name.hasSuffix(".json") {
            var info = stat()
            guard stat(directory + "/" + name, &info) == 0 else { continue }
            print.files[name] = [Int64(info.st_size), Int64(info.st_mtim.tv_sec), Int64(info.st_mtim.tv_nsec), Int64(info.st_ino)]
        }
        return print
    }
}
