# RumexWeeds (0 background, 1 rumex_obtusifolius, 2 rumex_crispus), prepared by
# tools/rumexweeds_prepare.py into processed/{train,val,test}/{images,masks}.
_base_ = "./suim.py"
model = dict(num_classes=3)
data = dict(type="RumexWeeds", root="data/RumexWeeds")
