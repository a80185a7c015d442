from bidsanon.cli import console

console()
