import ArgumentParser
import Foundation
import PortcullisCore
import PortcullisPool

struct ReloadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reload",
        abstract: "Validate the configuration and, if valid, replace the workers with a new generation.")

    @OptionGroup var options: ConfigOption

    func run() throws {
        do {
            _ = try GatewayValidation.validate(configPath: options.config)
        } catch {
            printError("reload refused, the running configuration keeps serving:\n\(error.description)")
            throw ExitCode(1)
        }
        let paths = RuntimePaths.locate(configPath: options.config)
        guard let pid = paths.runningMasterPid() else {
            printError("portcullis: not running (no live master in \(paths.pidFile))")
            throw ExitCode(3)
        }
        let before = paths.readState()?["last_reload"]
        kill(pid, SIGHUP)
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            usleep(50_000)
            guard let result = paths.readState()?["last_reload"], result != before else { continue }
            if result["ok"]?.boolValue == true {
                print("reloaded: generation \(result["generation"]?.intValue ?? 0)")
                return
            }
            let errors = result["errors"]?.arrayValue?.compactMap(\.stringValue) ?? []
            printError("reload refused by the master:\n" + errors.joined(separator: "\n"))
            throw ExitCode(1)
        }
        printError("portcullis: no reload result from master \(pid) within 10 s")
        throw ExitCode(1)
    }
}
