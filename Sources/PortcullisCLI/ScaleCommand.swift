import ArgumentParser
import Foundation
import PortcullisPool

struct ScaleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "scale", abstract: "Set the number of worker processes.")

    @OptionGroup var options: ConfigOption
    @Argument(help: "Desired worker processes (1...256).") var workers: Int

    func run() throws {
        guard (1...256).contains(workers) else { throw ValidationError("workers must be 1...256") }
        let paths = RuntimePaths.locate(configPath: options.config)
        guard let pid = paths.runningMasterPid() else {
            printError("portcullis: not running")
            throw ExitCode(3)
        }
        try "\(workers)\n".write(toFile: paths.scaleFile, atomically: true, encoding: .utf8)
        kill(pid, SIGUSR2)
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            usleep(100_000)
            let state = paths.readState()
            let live = state?["workers"]?.arrayValue?.filter { $0["retiring"]?.boolValue != true }.count ?? -1
            if state?["desired_workers"]?.intValue == Int64(workers) && live == workers {
                print("scaled to \(workers) workers")
                return
            }
        }
        printError("portcullis: master did not reach \(workers) workers within 10 s")
        throw ExitCode(1)
    }
}
