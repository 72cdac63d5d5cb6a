# /main.py on a keypad (kept as source; the flashing tool copies firmware/main.py here).
from pingjia.firmware import run

run.start()
