"""Class vocabularies shared by the synthetic generator and the BDD100K-format loader.

The names are BDD100K's own, so a model trained on synthetic scenes reads real BDD labels as is.
"""

DET_CLASSES = ("car", "truck", "bus", "person", "traffic light", "traffic sign")
TIMEOFDAY = ("daytime", "dawn/dusk", "night")
WEATHER = ("clear", "overcast", "rainy", "foggy", "snowy")
SCENE = ("highway", "city street", "residential")
ATTRIBUTES = {"weather": WEATHER, "scene": SCENE, "timeofday": TIMEOFDAY}
