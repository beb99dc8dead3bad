from lamina.cli import console

console()
