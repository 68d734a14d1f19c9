import ArgumentParser
import Foundation
import PortcullisPool

struct StopCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stop", abstract: "Stop the running gateway gracefully (in-flight requests finish).")

    @OptionGroup var options: ConfigOption
    @Option(help: "Seconds to wait for the master to exit.") var wait: Int = 60

    func run() throws {
        let paths = RuntimePaths.locate(configPath: options.config)
        guard let pid = paths.runningMasterPid() else {
            printError("portcullis: not running (no live master in \(paths.pidFile))")
            throw ExitCode(3)
        }
        kill(pid, SIGTERM)
        let deadline = Date().addingTimeInterval(Double(wait))
        while RuntimePaths.isAlive(pid) && Date() < deadline { usleep(50_000) }
        if RuntimePaths.isAlive(pid) {
            printError("portcullis: master \(pid) still running after \(wait)s")
            throw ExitCode(1)
        }
        print("stopped master \(pid)")
    }
}
