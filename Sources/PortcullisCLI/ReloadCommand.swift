import ArgumentParser
import Foundation
import PortcullisCore
import PortcullisPool
import PortcullisRuntime

struct ReloadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reload",
        abstract: "Validate the configuration and, if valid, swap it into the running workers.")

    @OptionGroup var options: ConfigOption

    func run() throws {
        let loaded: LoadedGateway
        do {
            loaded = try GatewayLoader.load(configPath: options.config)
        } catch {
            printError("reload refused, the running configuration keeps serving:\n\(error.description)")
            throw ExitCode(1)
        }
        do {
            let generation = try MasterControl(configPath: options.config).reload(readyTimeoutSeconds: loaded.config.server.readyTimeoutSeconds)
            print("reloaded: generation \(generation)")
        } catch {
            throw error.exit()
        }
    }
}

extension MasterControl.Failure {
    /// Prints the failure and gives the command's exit status.
    func exit() -> ExitCode {
        printError(message)
        return ExitCode(exitStatus)
    }
}
