import PortcullisCLI

PortcullisCommand.main()
