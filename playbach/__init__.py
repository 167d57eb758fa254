"""playbach: a Raspberry Pi that plays Bach live.

    playbach.trainer  corpus -> events -> Keras model -> evaluation -> MIDI   (desktop, TensorFlow)
    playbach.convert  Keras run -> TFLite / Edge TPU bundle                   (desktop, TensorFlow)
    playbach.device   bundle -> live MIDI daemon                              (Pi: numpy, mido, TFLite)
"""
__version__ = "0.1.0"
