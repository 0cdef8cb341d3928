from ondevice_vision.importers.main import run

run()
