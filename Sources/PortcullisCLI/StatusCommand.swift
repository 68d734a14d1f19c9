import ArgumentParser
import Foundation
import PortcullisCore
import PortcullisPool

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Show the master, its workers and their pids.")

    @OptionGroup var options: ConfigOption
    @Flag(help: "Print the state as JSON.") var json = false

    func run() throws {
        let paths = RuntimePaths.locate(configPath: options.config)
        guard let pid = paths.runningMasterPid(), let state = paths.readState() else {
            if json { print("{\"running\":false}") } else { print("not running") }
            throw ExitCode(3)
        }
        if json {
            var object = state.objectValue ?? JSONObject()
            object["running"] = true
            print(JSONCodec.serialize(.object(object)))
            return
        }
        let workers = state["workers"]?.arrayValue ?? []
        print("master \(pid), generation \(state["generation"]?.intValue ?? 0), socket \(state["socket"]?.stringValue ?? "?")")
        print("workers: \(workers.count) running, \(state["desired_workers"]?.intValue ?? 0) desired, \(state["threads"]?.intValue ?? 0) threads each")
        for w in workers {
            let retiring = w["retiring"]?.boolValue == true ? " (retiring)" : ""
            print("  pid \(w["pid"]?.intValue ?? 0)  generation \(w["generation"]?.intValue ?? 0)  since \(w["started_at"]?.stringValue ?? "")\(retiring)")
        }
        if let reload = state["last_reload"] {
            print("last reload: \(reload["ok"]?.boolValue == true ? "ok" : "refused") at \(reload["at"]?.stringValue ?? "")")
        }
    }
}
